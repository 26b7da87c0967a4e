"""The evaluator pipe protocol: length-prefixed frames of one code byte and a payload, with read deadlines."""

import os
import select
import struct
import time

HEADER = struct.Struct(">IB")
MAX_FRAME = 64 * 1024 * 1024

# Requests (parent → evaluator).
LOAD = 1
DECIDE = 2
UNLOAD = 3
PREPARE = 4
QUERY = 5
PING = 6

# Replies (evaluator → parent).
OK = 0
ERR = 1


class EvaluatorGone(Exception):
    """The evaluator closed its pipe (it exited or crashed) before answering."""


class EvaluatorTimeout(Exception):
    """The evaluator did not answer within the time budget."""


class FrameTooLarge(ValueError):
    """A frame longer than MAX_FRAME was sent or announced."""


def write_frame(fd: int, code: int, payload: bytes) -> None:
    """Write one whole frame (blocking); EvaluatorGone when the reader has gone."""
    if len(payload) + 1 > MAX_FRAME:
        raise FrameTooLarge(f"frame of {len(payload)} bytes exceeds {MAX_FRAME}")
    view = memoryview(HEADER.pack(len(payload) + 1, code) + payload)
    try:
        while view:
            view = view[os.write(fd, view):]
    except (BrokenPipeError, OSError) as exc:
        raise EvaluatorGone(str(exc)) from exc


def read_frame(fd: int, deadline: float | None = None) -> tuple[int, bytes]:
    """Read one frame; EvaluatorGone at end of file, EvaluatorTimeout past `deadline` (time.monotonic)."""
    length, code = HEADER.unpack(_read_exactly(fd, HEADER.size, deadline))
    if length > MAX_FRAME or length < 1:
        raise FrameTooLarge(f"frame announces {length} bytes")
    return code, _read_exactly(fd, length - 1, deadline)


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytes:
    """`size` bytes from `fd`, waiting at most until `deadline`."""
    chunks: list[bytes] = []
    remaining = size
    poller = None
    while remaining:
        if deadline is not None:
            if poller is None:
                poller = select.poll()
                poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            left_ms = (deadline - time.monotonic()) * 1000
            if left_ms <= 0 or not poller.poll(max(1, int(left_ms))):
                raise EvaluatorTimeout("no answer within the time budget")
        try:
            chunk = os.read(fd, remaining)
        except OSError as exc:
            raise EvaluatorGone(str(exc)) from exc
        if not chunk:
            raise EvaluatorGone("end of file")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
