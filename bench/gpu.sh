#!/usr/bin/env bash
# Detector throughput on a CUDA machine, as one prepared run: prints the GPU, checks that CUDA scores match
# the CPU's, then runs bench/detector_throughput.py at GPU-sized batches. Installs nothing from the internet:
# the machine's own python3 must hold torch with CUDA; the few pure packages the detector needs beyond it
# (pydantic and its parts, structlog) come as wheels in .whl/ when present (see README, "Detector").
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
if [ -d .whl ] && compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/bastion-site .whl/*.whl
    export PYTHONPATH="/tmp/bastion-site:$PYTHONPATH"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 - <<'EOF'
import torch

from bastion.detector.scorer import Detector
from bastion.detector.synthetic import attack_sessions, normal_sessions
from bastion.detector.train import train

assert torch.cuda.is_available(), "no CUDA device visible to torch"
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
checkpoint = train([s.events for s in normal_sessions(200, seed=5, warmup=50)], epochs=2, seed=5)
events = [e for s in attack_sessions(40, seed=6, warmup=50) + normal_sessions(40, seed=7, warmup=50) for e in s.events]
cpu = Detector(checkpoint, device="cpu").score(events)
gpu = Detector(checkpoint, device="cuda").score(events)
worst = max(abs(a.score - b.score) / max(1.0, abs(a.score)) for a, b in zip(cpu, gpu, strict=True))
same = sum(a.action == b.action for a, b in zip(cpu, gpu, strict=True))
print(f"CUDA vs CPU on {len(events)} events: largest relative score difference {worst:.2e}, same action {same}/{len(events)}")
EOF
python3 bench/detector_throughput.py --sessions 65536 --events 32768 --batches 1,1024,16384 \
    --engine-events 1048576 --engine-batches 16384,65536,262144 --repeats 5 "$@"
