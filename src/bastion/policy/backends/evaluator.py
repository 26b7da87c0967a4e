"""The evaluator process: holds compiled policies and answers the parent over a pipe (see bastion.policy.backends.wire).

Run as `python -m bastion.policy.backends.evaluator ENGINE READ_FD WRITE_FD` (ENGINE: opa or regocpp). The Rego
runtime runs only here, so a crash or a runaway evaluation takes down this process, never the gateway; OPA's Go
runtime is started here by exec, never inherited through a fork. It imports nothing heavier than its runtime.
"""

import json
import resource
import sys
from collections.abc import Callable
from typing import Any

from bastion.policy.backends import wire
from bastion.policy.backends.runtimes import Runtime, load_runtime


class Evaluator:
    """Compiled policies by slot name, plus one scratch policy queried by entrypoint (tests, explain)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.slots: dict[str, Any] = {}
        self.scratch: Any = None

    def load(self, payload: bytes) -> bytes:
        """Compile `{slot, modules, data, path}` into the slot (replacing what it held)."""
        request = json.loads(payload)
        self.slots[request["slot"]] = self.runtime.compile(request["modules"], request["data"], request["path"])
        return b""

    def unload(self, payload: bytes) -> bytes:
        """Drop a slot."""
        self.slots.pop(payload.decode(), None)
        return b""

    def decide(self, payload: bytes) -> bytes:
        """Evaluate `slot\\ninput_json` against the slot's compiled policy; the document as JSON."""
        slot, _, input_json = payload.partition(b"\n")
        compiled = self.slots.get(slot.decode())
        if compiled is None:
            raise LookupError(f"no policy loaded in slot {slot.decode()!r}")
        return _dumps(self.runtime.decide(compiled, input_json.decode()))

    def prepare(self, payload: bytes) -> bytes:
        """Compile `{modules, data, entrypoints}` into the scratch policy (tests, explanations)."""
        request = json.loads(payload)
        self.scratch = None
        self.scratch = self.runtime.prepare(request["modules"], request["data"], request["entrypoints"])
        return b""

    def query(self, payload: bytes) -> bytes:
        """Evaluate `{entrypoint, input, trace?, coverage?}` on the scratch policy; `{"defined", "value", ...}`."""
        if self.scratch is None:
            raise LookupError("no scratch policy prepared")
        request = json.loads(payload)
        return _dumps(self.runtime.query(self.scratch, request["entrypoint"], request["input"],
                                         bool(request.get("trace")), bool(request.get("coverage"))))

    def ping(self, _payload: bytes) -> bytes:
        """Answer that this process is alive."""
        return b"pong"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def serve(engine: str, read_fd: int, write_fd: int) -> None:
    """Answer frames until the parent closes the pipe; a crash here leaves no core file behind."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    evaluator = Evaluator(load_runtime(engine))
    handlers: dict[int, Callable[[bytes], bytes]] = {
        wire.LOAD: evaluator.load, wire.DECIDE: evaluator.decide, wire.UNLOAD: evaluator.unload,
        wire.PREPARE: evaluator.prepare, wire.QUERY: evaluator.query, wire.PING: evaluator.ping,
    }
    while True:
        try:
            code, payload = wire.read_frame(read_fd)
        except wire.EvaluatorGone:
            return
        handler = handlers.get(code)
        try:
            if handler is None:
                raise LookupError(f"unknown request code {code}")
            reply = (wire.OK, handler(payload))
        except Exception as exc:  # every failure is answered, never fatal to the loop
            reply = (wire.ERR, evaluator.runtime.failure_text(exc).encode())
        wire.write_frame(write_fd, *reply)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
