"""The locked-down shape of one session container: names, labels, mounts, limits and security options."""

import hashlib
import re
from pathlib import Path
from typing import Any

from docker.types import LogConfig, Mount, Ulimit

from bastion.sandbox.types import WORKSPACE, SandboxError, SandboxLimits, SessionSpec

EXECUTOR_PATH = "/opt/bastion/executor.py"
SOCKET_DIR = "/run/bastion"
SANDBOX_USER = "65534:65534"
OWNER_LABEL = "bastion.owner"
SESSION_LABEL = "bastion.session"
AGENT_LABEL = "bastion.agent"
POOL_LABEL = "bastion.pool"
SLOT_LABEL = "bastion.slot"
PARENT_LABEL = "bastion.parent-session"
CONTAINER_SHAPE = ("memory_mb", "cpus", "pids", "nofile", "workspace_mb")
TMP_SIZE_MB = 16
CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_id(value: str, what: str) -> str:
    """Refuse ids that could not name a container or a directory safely."""
    if not ID_PATTERN.fullmatch(value):
        raise SandboxError(
            f"invalid {what} {value!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return value


def container_name(owner: str, session_id: str) -> str:
    return f"bastion-{owner}-{session_id}"


def companion_key(session_id: str, image: str) -> str:
    """The id of the companion container a session's calls from `image` run in."""
    return f"{session_id}.img-{hashlib.sha256(image.encode()).hexdigest()[:12]}"


def pool_container_name(owner: str, slot: str) -> str:
    return f"bastion-pool-{owner}-{slot}"


def hostname(session_id: str) -> str:
    """`sandbox-` and the first 8 characters of the session id, made valid for a hostname."""
    prefix = re.sub(r"[^a-z0-9]", "-", session_id[:8].lower()).strip("-")
    return f"sandbox-{prefix}"


def session_labels(spec: SessionSpec, owner: str) -> dict[str, str]:
    """Labels of a container made for one session: the spec's own, then owner, session and agent."""
    return {**spec.labels, OWNER_LABEL: owner, SESSION_LABEL: spec.session_id, AGENT_LABEL: spec.agent_id}


def pool_labels(owner: str, slot: str) -> dict[str, str]:
    """Labels of a warm-pool container: its pool's owner and its slot, never a session (labels are fixed)."""
    return {POOL_LABEL: owner, SLOT_LABEL: slot}


def same_shape(one: SandboxLimits, other: SandboxLimits) -> bool:
    """True when containers made with either limits are identical (per-call caps and lifetimes aside)."""
    return all(getattr(one, field) == getattr(other, field) for field in CONTAINER_SHAPE)


# Under gVisor the container's pids cgroup also counts the sandbox kernel's own host threads (about 40 idle,
# more under load), which the session's `pids` limit is not meant to include.
RUNSC_THREAD_ALLOWANCE = 128


def container_options(
    *,
    name: str,
    host: str,
    labels: dict[str, str],
    limits: SandboxLimits,
    image: str,
    runtime: str,
    seccomp_profile: str,
    executor_file: Path,
    socket_dir: Path,
) -> dict[str, Any]:
    """Keyword arguments for `containers.create` (never `run`, which pulls a missing image from a registry): no
    network, no capabilities, read-only, non-root, capped."""
    memory = f"{limits.memory_mb}m"
    return {
        "image": image,
        "command": ["python3", "-I", "-S", EXECUTOR_PATH],
        "name": name,
        "hostname": host,
        "labels": labels,
        "detach": True,
        "init": True,
        "runtime": runtime,
        "user": SANDBOX_USER,
        "working_dir": WORKSPACE,
        "environment": {"PATH": CHILD_PATH, "LANG": "C.UTF-8", "HOME": WORKSPACE},
        "network_mode": "none",
        "ipc_mode": "private",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true", f"seccomp={seccomp_profile}"],
        "read_only": True,
        "tmpfs": {
            WORKSPACE: f"rw,size={limits.workspace_mb}m,uid=65534,gid=65534,mode=0700,nosuid,nodev",
            "/tmp": f"rw,size={TMP_SIZE_MB}m,mode=1777,nosuid,nodev",
        },
        "mounts": [
            Mount(target=EXECUTOR_PATH, source=str(executor_file), type="bind", read_only=True),
            Mount(target=SOCKET_DIR, source=str(socket_dir), type="bind", read_only=True),
        ],
        "pids_limit": limits.pids + (RUNSC_THREAD_ALLOWANCE if runtime == "runsc" else 0),
        "mem_limit": memory,
        "memswap_limit": memory,
        "nano_cpus": int(limits.cpus * 1_000_000_000),
        "ulimits": [
            Ulimit(name="nofile", soft=limits.nofile, hard=limits.nofile),
            Ulimit(name="core", soft=0, hard=0),
        ],
        "log_config": LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
    }
