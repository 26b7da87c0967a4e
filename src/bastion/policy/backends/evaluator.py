"""The evaluator process: holds compiled policies and answers the parent over a pipe (see bastion.policy.backends.wire).

Run as `python -m bastion.policy.backends.evaluator READ_FD WRITE_FD`. rego-cpp runs only here, so a crash or a runaway
evaluation takes down this process, never the gateway. It imports nothing heavier than regopy.
"""

import json
import resource
import sys
from collections.abc import Callable
from typing import Any

from regopy import Bundle, RegoError

from bastion.policy.backends import wire
from bastion.policy.backends.regocpp import (
    PolicyEvaluationError,
    compile_bundle,
    describe_rego_error,
    error_messages,
    evaluate,
    failure_text,
    new_interpreter,
)
from bastion.policy.errors import PolicyCompileError


class Evaluator:
    """Compiled policies by slot name, plus one scratch bundle with named entrypoints (tests, explain)."""

    def __init__(self) -> None:
        self.runtime = new_interpreter()
        self.slots: dict[str, Bundle] = {}
        self.scratch: Bundle | None = None

    def load(self, payload: bytes) -> bytes:
        """Compile `{slot, modules, data, path}` into the slot (replacing what it held)."""
        request = json.loads(payload)
        self.slots[request["slot"]] = compile_bundle(request["modules"], request["data"], request["path"])
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
            raise PolicyEvaluationError(f"no policy loaded in slot {slot.decode()!r}")
        return json.dumps(evaluate(self.runtime, compiled, input_json.decode()), separators=(",", ":")).encode()

    def prepare(self, payload: bytes) -> bytes:
        """Compile `{modules, data, entrypoints}` into the scratch bundle (tests, explanations)."""
        request = json.loads(payload)
        interpreter = new_interpreter()
        modules = request["modules"]
        try:
            for name, source in sorted(modules.items()):
                interpreter.add_module(name, source)
            interpreter.add_data(request["data"])
            compiled = interpreter.build(None, request["entrypoints"])
        except RegoError as exc:
            raise PolicyCompileError(describe_rego_error(str(exc), modules)) from exc
        if not compiled.ok():
            raise PolicyCompileError("; ".join(error_messages(compiled.node())))
        self.scratch = compiled
        return b""

    def query(self, payload: bytes) -> bytes:
        """Evaluate `{entrypoint, input}` on the scratch bundle; `{"defined": bool, "value": ...}`."""
        if self.scratch is None:
            raise PolicyEvaluationError("no scratch bundle prepared")
        request = json.loads(payload)
        self.runtime.set_input_term(json.dumps(request["input"], separators=(",", ":")))
        output = self.runtime.query_bundle_entrypoint(self.scratch, request["entrypoint"])
        if not output.ok():
            raise PolicyEvaluationError("; ".join(error_messages(output.node())))
        expressions = output.results[0].expressions if output.results else []
        answer: dict[str, Any] = {"defined": bool(expressions), "value": expressions[0] if expressions else None}
        return json.dumps(answer, separators=(",", ":")).encode()

    def ping(self, _payload: bytes) -> bytes:
        """Answer that this process is alive."""
        return b"pong"


def serve(read_fd: int, write_fd: int) -> None:
    """Answer frames until the parent closes the pipe; a crash here leaves no core file behind."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    evaluator = Evaluator()
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
                raise PolicyEvaluationError(f"unknown request code {code}")
            reply = (wire.OK, handler(payload))
        except Exception as exc:  # every failure is answered, never fatal to the loop
            reply = (wire.ERR, failure_text(exc).encode())
        wire.write_frame(write_fd, *reply)


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
