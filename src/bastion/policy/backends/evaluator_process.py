"""The parent's handle on one evaluator process: spawn it, ask it one thing at a time, kill it."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bastion.policy.backends import wire
from bastion.policy.backends.runtimes import ContainedEngine, default_engine

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])


class EvaluatorFailure(Exception):
    """The evaluator could not answer: it crashed, ran over budget, or refused the request."""


class EvaluatorCrashed(EvaluatorFailure):
    """The evaluator process died while answering (a crash of its Rego runtime is contained to it)."""


class EvaluatorOverBudget(EvaluatorFailure):
    """The evaluator did not answer within the time budget and was killed."""


class EvaluatorRefused(EvaluatorFailure):
    """The evaluator answered with an error (compile error, evaluation error); it is still alive."""


class EvaluatorProcess:
    """One `python -m bastion.policy.backends.evaluator` child holding `engine` (by default OPA's evaluator when
    installed, else rego-cpp) and its two pipes; one request at a time (not thread-safe)."""

    def __init__(self, engine: ContainedEngine | None = None) -> None:
        self.engine: ContainedEngine = engine or default_engine()
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        # A bare environment: policies can read it (`opa.runtime().env`), and the gateway's holds secrets.
        env = {"PATH": os.defpath, "LC_ALL": "C.UTF-8", "PYTHONPATH": _PACKAGE_ROOT}
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "bastion.policy.backends.evaluator", self.engine, str(to_child_r),
                 str(from_child_w)],
                pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                env=env, close_fds=True)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._write_fd = to_child_w
        self._read_fd = from_child_r
        self._dead = False

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._process.pid

    @property
    def alive(self) -> bool:
        """False once the child crashed, was killed, or was closed."""
        return not self._dead and self._process.poll() is None

    def request(self, code: int, payload: bytes, timeout_s: float) -> bytes:
        """Send one request and wait at most `timeout_s` for the answer; EvaluatorFailure otherwise."""
        if not self.alive:
            raise EvaluatorCrashed(f"evaluator {self.describe_exit()}")
        deadline = time.monotonic() + timeout_s
        try:
            wire.write_frame(self._write_fd, code, payload)
            status, reply = wire.read_frame(self._read_fd, deadline)
        except wire.EvaluatorTimeout as exc:
            self.kill()
            raise EvaluatorOverBudget(f"no answer within {timeout_s * 1000:.0f} ms; evaluator killed") from exc
        except (wire.EvaluatorGone, wire.FrameTooLarge) as exc:
            self.kill(grace_s=1.0)
            raise EvaluatorCrashed(f"evaluator {self.describe_exit()}") from exc
        if status != wire.OK:
            raise EvaluatorRefused(reply.decode(errors="replace"))
        return reply

    def describe_exit(self) -> str:
        """How the child ended, e.g. `crashed (SIGSEGV)`; `is running` while it lives."""
        try:
            code = self._process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "is running"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"crashed ({name})"
        return f"exited with status {code}"

    def kill(self, grace_s: float = 0.0) -> None:
        """Kill the child (after `grace_s` to exit by itself) and release its pipes; idempotent."""
        if self._dead:
            return
        self._dead = True
        try:
            self._process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for fd in (self._write_fd, self._read_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
