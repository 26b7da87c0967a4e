"""The in-container executor: the sandbox's main process, serving the gateway's requests over one socket.

Stdlib only; started as `python3 -I -S /opt/bastion/executor.py` under Docker's init. It connects to the
gateway's Unix socket in the read-only `/run/bastion`, says hello, then answers newline-delimited JSON
requests (`exec`, `read`, `write`, `list`; `cancel` kills what a request left running), one thread per
request, each with one `result` frame (or an `error` frame when the executor itself failed); an `exec` with
`"stream": true` first sends its output in `chunk` frames as it arrives. It reconnects whenever the link
drops. It also relays every TCP connection to 127.0.0.1:3128 (the container's own loopback) to the gateway's
egress proxy socket, first telling the proxy which call's process tree opened it (its Unix session: each exec
starts one), so a destination granted to one call is never reached by another process.
"""

import codecs
import contextlib
import ctypes
import hashlib
import json
import os
import queue
import selectors
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

SOCKET_PATH = "/run/bastion/exec.sock"
EGRESS_SOCKET_PATH = "/run/bastion/egress.sock"
PROXY_ADDRESS = ("127.0.0.1", 3128)
PROXY_URL = "http://127.0.0.1:3128"
WORKSPACE = "/workspace"
PROTOCOL = 1
CHILD_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": WORKSPACE, "LANG": "C.UTF-8", "TMPDIR": "/tmp",
    "HTTP_PROXY": PROXY_URL, "HTTPS_PROXY": PROXY_URL, "http_proxy": PROXY_URL, "https_proxy": PROXY_URL,
}  # fmt: skip
OOM_COUNTER_FILES = ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events")
READ_CHUNK = 65536
DRAIN_GRACE_S = 0.5
EXIT_POLL_S = 0.05
MAX_LIST_ENTRIES = 10000
MAX_FORWARDS = 32
MAX_IDLE_WORKERS = 4
PR_SET_DUMPABLE = 4
INIT_PID = 1
SWEEP_PAUSE_S = 0.001
SWEEP_LIMIT_S = 5.0

Frame = dict[str, Any]
Emit = Callable[[str, bytes], None]


class PathRejected(Exception):
    """A workspace path that leaves /workspace or is malformed."""


class Link:
    """One connection to the gateway; frames are sent whole, from any thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()

    def send(self, frame: Frame) -> None:
        """Send one frame; a dropped link is noticed by the reading loop, so errors are ignored here."""
        data = json.dumps(frame, separators=(",", ":")).encode() + b"\n"
        with self._lock, contextlib.suppress(OSError):
            self.sock.sendall(data)


class ProcessGroups:
    """The process groups of calls in flight by request id, so they can be killed when the link drops or the
    gateway cancels the request. A request is known from the moment it is read, so a cancel that overtakes its
    process (both frames arrive together after the container was frozen) stops the process as it starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[object, int | None] = {}
        self._calls: dict[object, str] = {}
        self._cancelled: set[object] = set()

    def accept(self, request_id: object, call_id: object = None) -> None:
        """A request was read (for the gateway's call `call_id`, when it names one); its process is not started yet."""
        with self._lock:
            self._groups[request_id] = None
            if isinstance(call_id, str):
                self._calls[request_id] = call_id

    def call_of(self, sid: int) -> str | None:
        """The call whose process started the Unix session `sid` (each exec's process leads its own), while it runs."""
        with self._lock:
            return next((self._calls.get(request_id) for request_id, pgid in self._groups.items() if pgid == sid),
                        None)

    def add(self, request_id: object, pgid: int) -> bool:
        """Track the request's process group; False when the request was cancelled before (the caller kills it)."""
        with self._lock:
            if request_id in self._cancelled:
                return False
            self._groups[request_id] = pgid
            return True

    def discard(self, request_id: object) -> None:
        with self._lock:
            self._groups.pop(request_id, None)
            self._calls.pop(request_id, None)
            self._cancelled.discard(request_id)

    def kill(self, request_id: object) -> None:
        with self._lock:
            if request_id not in self._groups:
                return
            pgid = self._groups[request_id]
            if pgid is None:
                self._cancelled.add(request_id)
        if pgid is not None:
            kill_group(pgid)

    def kill_all(self) -> None:
        with self._lock:
            groups = [pgid for pgid in self._groups.values() if pgid is not None]
        for pgid in groups:
            kill_group(pgid)


RUNNING = ProcessGroups()


def kill_group(pgid: int) -> None:
    """SIGKILL a whole process group; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def process_table(pids: list[int]) -> dict[int, tuple[int, bool]]:
    """Those processes that still exist: pid -> (parent pid, still alive: not a zombie or dead, or a zombie whose
    other threads still run, as after the main thread's pthread_exit)."""
    table: dict[int, tuple[int, bool]] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat_file:
                line = stat_file.read()
        except OSError:
            continue
        fields = line[line.rindex(b")") + 2 :].split()
        table[pid] = (int(fields[1]), fields[0] not in (b"Z", b"X", b"x") or int(fields[17]) > 1)
    return table


def protected(table: dict[int, tuple[int, bool]], own: int) -> set[int]:
    """Init, the executor, and every process still in the tree of another call in flight (a child of the
    executor other than `own`)."""
    me = os.getpid()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    kept = {INIT_PID, me}
    pending = [pid for pid in children.get(me, []) if pid != own]
    while pending:
        pid = pending.pop()
        if pid not in kept:
            kept.add(pid)
            pending.extend(children.get(pid, []))
    return kept


def leftovers(own: int) -> list[int]:
    """The live processes a sweep kills: all but init, the executor and other calls' trees (`own` is one of them
    while it runs). When only init, the executor and `own` exist, only `own`'s state is read."""
    pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    alone = {INIT_PID, os.getpid()}
    if all(pid in alone for pid in pids if pid != own) and not process_table([own]).get(own, (0, False))[1]:
        return []
    table = process_table(pids)
    kept = protected(table, own)
    return [pid for pid, (_, live) in table.items() if live and pid not in kept]


def sweep(own: int) -> int:
    """SIGKILL every live process but init, the executor and other calls' trees (`own`, the call's process, is
    killed too), pass after pass until none is left; return how many there were besides `own`."""
    killed: set[int] = set()
    deadline = time.monotonic() + SWEEP_LIMIT_S
    while (alive := leftovers(own)) and time.monotonic() < deadline:
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if killed.issuperset(alive):
            time.sleep(SWEEP_PAUSE_S)
        killed.update(alive)
    killed.discard(own)
    return len(killed)


def failure(exit_code: int, message: str) -> Frame:
    """A result for a request that could not be carried out."""
    return {"exit_code": exit_code, "stderr": message.rstrip("\n") + "\n"}


class OomCounter:
    """The container's memory-cgroup OOM-kill counter (cgroup v1 or v2), read from a file kept open: a read at
    offset 0 costs 2 µs, opening the file again for every call 23 µs."""

    def __init__(self, paths: tuple[str, ...]) -> None:
        self._paths = paths
        self._fd: int | None = None
        self._lock = threading.Lock()

    def read(self) -> int:
        """The count now, or -1 when no counter file is readable."""
        fd = self._fd if self._fd is not None else self._open()
        if fd is None:
            return -1
        try:
            text = os.pread(fd, 4096, 0).decode()
        except OSError:
            return -1
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return -1

    def _open(self) -> int | None:
        """The first counter file that opens (once, even when several threads ask at the same time)."""
        with self._lock:
            if self._fd is None:
                for path in self._paths:
                    with contextlib.suppress(OSError):
                        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                        break
            return self._fd


OOM_KILLS = OomCounter(OOM_COUNTER_FILES)


class Capture:
    """Keeps the first `cap` bytes of a stream and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.kept = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> bytes:
        """Count `data` and keep what fits under the cap; return the part kept."""
        self.total += len(data)
        kept = data[: max(self.cap - len(self.kept), 0)]
        self.kept += kept
        return kept

    @property
    def truncated(self) -> bool:
        return self.total > self.cap

    def text(self) -> str:
        return self.kept.decode("utf-8", errors="replace")


class ExitWatch:
    """Tells when a child has exited without reaping it, via a pidfd or, failing that, by polling."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self.fd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.fd = None

    def exited(self) -> bool:
        info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return info is not None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)


def collect(
    proc: subprocess.Popen[bytes], stdin: bytes, timeout: float, cap: int, emit: Emit | None = None
) -> tuple[Capture, Capture, bool, int]:
    """Feed stdin, capture both streams (passing kept bytes to `emit`) and enforce the wall clock; once the
    process has ended, sweep away every process it left.

    Returns (stdout, stderr, timed_out, processes killed by the sweep).
    """
    assert proc.stdout is not None and proc.stderr is not None
    stdout, stderr = Capture(cap), Capture(cap)
    captures = {proc.stdout.fileno(): stdout, proc.stderr.fileno(): stderr}
    names = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
    selector = selectors.DefaultSelector()
    for fd in captures:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    pending = memoryview(stdin)
    stdin_fd = proc.stdin.fileno() if proc.stdin is not None else None
    if stdin_fd is not None:
        if pending:
            os.set_blocking(stdin_fd, False)
            selector.register(stdin_fd, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()  # type: ignore[union-attr]
            stdin_fd = None
    watch = ExitWatch(proc.pid)
    if watch.fd is not None:
        selector.register(watch.fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    ended_at: float | None = None
    timed_out = False
    killed: int | None = None
    open_streams = len(captures)
    try:
        while True:
            now = time.monotonic()
            if ended_at is None:
                if watch.exited():
                    ended_at = now
                elif now >= deadline:
                    timed_out = True
                    ended_at = now
                if ended_at is not None:
                    killed = sweep(proc.pid)
                    if watch.fd is not None:
                        selector.unregister(watch.fd)
            if ended_at is not None and (open_streams == 0 or now >= ended_at + DRAIN_GRACE_S):
                break
            if ended_at is None:
                wait = deadline - now if watch.fd is not None else min(deadline - now, EXIT_POLL_S)
            else:
                wait = ended_at + DRAIN_GRACE_S - now
            for key, _ in selector.select(max(wait, 0.0)):
                fd = key.fd
                if fd == stdin_fd:
                    try:
                        written = os.write(fd, pending[:READ_CHUNK])
                        pending = pending[written:]
                    except BlockingIOError:
                        continue
                    except OSError:
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(fd)
                        proc.stdin.close()  # type: ignore[union-attr]
                        stdin_fd = None
                elif fd in captures:
                    try:
                        data = os.read(fd, READ_CHUNK)
                    except BlockingIOError:
                        continue
                    if data:
                        kept = captures[fd].feed(data)
                        if kept and emit is not None:
                            emit(names[fd], kept)
                    else:
                        selector.unregister(fd)
                        open_streams -= 1
    finally:
        selector.close()
        watch.close()
        kill_group(proc.pid)
        proc.kill()
        if killed is None:
            killed = sweep(proc.pid)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        proc.wait()
    return stdout, stderr, timed_out, killed


def chunk_sender(link: "Link", request_id: object) -> Emit:
    """An `emit` that sends output as `chunk` frames, decoding UTF-8 across chunk boundaries."""
    decoders = {name: codecs.getincrementaldecoder("utf-8")("replace") for name in ("stdout", "stderr")}

    def emit(stream: str, data: bytes) -> None:
        text = decoders[stream].decode(data)
        if text:
            link.send({"id": request_id, "type": "chunk", "stream": stream, "data": text})

    return emit


def changed_tool_file(verify: object) -> str | None:
    """The first tool file (path: SHA-256) whose content is not what the gateway installed, read right before exec."""
    if not isinstance(verify, dict):
        return None
    for path, digest in verify.items():
        try:
            with open(path, "rb") as file:
                if hashlib.sha256(file.read()).hexdigest() != digest:
                    return path
        except OSError:
            return path
    return None


def run_exec(request: Frame, emit: Emit | None = None) -> Frame:
    """Run one process in /workspace in a new session; whatever it leaves behind dies with it."""
    argv = request.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(arg, str) for arg in argv):
        return failure(2, "exec needs a non-empty argv of strings")
    stdin_text = request.get("stdin")
    timeout = float(request.get("timeout_s", 10.0))
    cap = int(request.get("max_output_bytes", 65536))
    changed = changed_tool_file(request.get("verify"))
    if changed is not None:
        return failure(126, f"{changed}: the tool file does not hold what was installed (digest mismatch); "
                            "nothing was run")
    tool_dir = request.get("tool_dir")
    oom_before = OOM_KILLS.read()
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL if stdin_text is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=WORKSPACE,
            env={**CHILD_ENV, "BASTION_TOOL_DIR": tool_dir} if isinstance(tool_dir, str) else CHILD_ENV,
            start_new_session=True,
        )
    except FileNotFoundError:
        return failure(127, f"{argv[0]}: command not found")
    except OSError as exc:
        return failure(126, f"{argv[0]}: {exc.strerror or exc}")
    if not RUNNING.add(request.get("id"), proc.pid):
        kill_group(proc.pid)
    stdout, stderr, timed_out, killed = collect(proc, (stdin_text or "").encode(), timeout, cap, emit)
    duration_ms = (time.monotonic() - started) * 1000.0
    code = proc.returncode
    sig = -code if code < 0 else None
    exit_code = 128 + sig if sig is not None else code
    return {
        "exit_code": exit_code,
        "stdout": stdout.text(),
        "stderr": stderr.text(),
        "duration_ms": duration_ms,
        "timed_out": timed_out,
        "truncated": stdout.truncated or stderr.truncated,
        "stdout_bytes": stdout.total,
        "stderr_bytes": stderr.total,
        "signal": sig,
        "oom_killed": exit_code == 137 and not timed_out and OOM_KILLS.read() > oom_before >= 0,
        "seccomp_killed": sig == signal.SIGSYS,
        "killed_processes": killed,
    }


def inside_workspace(path: str) -> bool:
    return path == WORKSPACE or path.startswith(WORKSPACE + "/")


def resolve(path: object) -> str:
    """The real path of a workspace path; rejects escapes by `..`, absolute paths and symlinks."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise PathRejected("a non-empty path is required")
    joined = os.path.normpath(os.path.join(WORKSPACE, path))
    if not inside_workspace(joined):
        raise PathRejected(f"path escapes {WORKSPACE}: {path}")
    real = os.path.realpath(joined)
    if not inside_workspace(real):
        raise PathRejected(f"path leaves {WORKSPACE} through a symlink: {path}")
    return real


def relative(real: str) -> str:
    return os.path.relpath(real, WORKSPACE)


def fs_failure(path: object, exc: OSError) -> Frame:
    """Map an OS error on a workspace path to a result: 1 for a missing or unusable file."""
    return failure(1, f"{path}: {exc.strerror or exc}")


def run_read(request: Frame) -> Frame:
    """Return a workspace file's content as stdout, capped like process output."""
    cap = int(request.get("max_output_bytes", 65536))
    try:
        real = resolve(request.get("path"))
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except PathRejected as exc:
        return failure(2, str(exc))
    except OSError as exc:
        return fs_failure(request.get("path"), exc)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return failure(1, f"{request.get('path')}: not a regular file")
        capture = Capture(cap)
        while len(capture.kept) < cap and (data := os.read(fd, min(READ_CHUNK, cap - len(capture.kept)))):
            capture.feed(data)
        capture.total = max(capture.total, info.st_size)
    except OSError as exc:
        return fs_failure(request.get("path"), exc)
    finally:
        os.close(fd)
    return {
        "exit_code": 0,
        "stdout": capture.text(),
        "stdout_bytes": capture.total,
        "truncated": capture.truncated,
        "data": {"path": relative(real), "size": info.st_size},
    }


def run_write(request: Frame) -> Frame:
    """Create or replace a workspace file with the request's content, creating parent directories."""
    content = request.get("content") or ""
    if not isinstance(content, str):
        return failure(2, "write needs string content")
    data = content.encode()
    try:
        real = resolve(request.get("path"))
        if real == WORKSPACE:
            raise PathRejected("cannot write to the workspace directory itself")
        os.makedirs(os.path.dirname(real), exist_ok=True)
        fd = os.open(real, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except PathRejected as exc:
        return failure(2, str(exc))
    except OSError as exc:
        return fs_failure(request.get("path"), exc)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return failure(1, f"{request.get('path')}: not a regular file")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        return fs_failure(request.get("path"), exc)
    finally:
        os.close(fd)
    return {"exit_code": 0, "data": {"path": relative(real), "bytes": len(data)}}


def entry_type(entry: os.DirEntry[str]) -> str:
    if entry.is_symlink():
        return "symlink"
    if entry.is_dir(follow_symlinks=False):
        return "dir"
    if entry.is_file(follow_symlinks=False):
        return "file"
    return "other"


def run_list(request: Frame) -> Frame:
    """List a workspace directory: entries with name, type and size in `data`, names in stdout."""
    path = request.get("path") or "."
    try:
        real = resolve(path)
        with os.scandir(real) as scan:
            entries = []
            for entry in scan:
                entries.append(
                    {"name": entry.name, "type": entry_type(entry), "size": entry.stat(follow_symlinks=False).st_size}
                )
                if len(entries) > MAX_LIST_ENTRIES:
                    break
    except PathRejected as exc:
        return failure(2, str(exc))
    except OSError as exc:
        return fs_failure(path, exc)
    truncated = len(entries) > MAX_LIST_ENTRIES
    entries = sorted(entries[:MAX_LIST_ENTRIES], key=lambda item: item["name"])
    names = [item["name"] + ("/" if item["type"] == "dir" else "") for item in entries]
    return {
        "exit_code": 0,
        "stdout": "".join(name + "\n" for name in names),
        "truncated": truncated,
        "data": {"path": relative(real), "entries": entries},
    }


OPERATIONS = {"exec": run_exec, "read": run_read, "write": run_write, "list": run_list}


def handle(link: Link, request: Frame) -> None:
    """Carry out one request and send its single reply."""
    request_id = request.get("id")
    op = request.get("op")
    operation = OPERATIONS.get(op) if isinstance(op, str) else None
    try:
        if operation is None:
            reply = {"id": request_id, "type": "error", "message": f"unknown op: {op!r}"}
        elif operation is run_exec and request.get("stream") is True:
            reply = {"id": request_id, "type": "result", **run_exec(request, chunk_sender(link, request_id))}
        else:
            reply = {"id": request_id, "type": "result", **operation(request)}
    except Exception as exc:
        reply = {"id": request_id, "type": "error", "message": f"{type(exc).__name__}: {exc}"}
    finally:
        RUNNING.discard(request_id)
    link.send(reply)


class Workers:
    """The threads of the executor. An idle one takes the next piece of work and a new one starts only when none
    is idle, so calls never queue behind each other; starting a thread per request cost a sequential caller about
    0.1 ms a call. Up to MAX_IDLE_WORKERS wait for more work, the others end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[Callable[[], None]]] = []

    def submit(self, work: Callable[[], None]) -> None:
        """Hand `work` to an idle worker, or to a new one; RuntimeError when no thread can start."""
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._work, args=(inbox,), daemon=True).start()
        inbox.put(work)

    def _work(self, inbox: "queue.SimpleQueue[Callable[[], None]]") -> None:
        while True:
            inbox.get()()
            with self._lock:
                if len(self._idle) >= MAX_IDLE_WORKERS:
                    return
                self._idle.append(inbox)


WORKERS = Workers()


def serve(sock: socket.socket) -> None:
    """Answer requests on one connection until the gateway closes it."""
    link = Link(sock)
    link.send({"type": "hello", "protocol": PROTOCOL, "pid": os.getpid()})
    ended = threading.Event()
    with sock.makefile("rb") as lines:
        try:
            WORKERS.submit(lambda: read_requests(link, lines, ended))
        except RuntimeError:
            read_requests(link, lines, ended)
        ended.wait()


def read_requests(link: Link, lines: BinaryIO, ended: threading.Event) -> None:
    """Read frames until one asks for work, then hand the reading on to another worker and do the work in this
    thread: the request starts without waiting for a thread to wake, and the link is never left unread (cancels
    are taken as they come). Sets `ended` when the connection closes."""
    request = None
    try:
        request = next_request(link, lines, lambda: read_requests(link, lines, ended))
    finally:
        if request is None:
            ended.set()
    if request is not None:
        handle(link, request)


def next_request(link: Link, lines: BinaryIO, read_on: Callable[[], None]) -> Frame | None:
    """The next request for work, once `read_on` (the reading) is handed to another worker; None when the
    connection closed. A request no thread can be found for is answered with an error."""
    try:
        for line in lines:
            request = admitted(link, line)
            if request is None:
                continue
            try:
                WORKERS.submit(read_on)
            except RuntimeError as exc:
                RUNNING.discard(request["id"])
                link.send({"id": request["id"], "type": "error", "message": f"cannot start a thread: {exc}"})
                continue
            return request
    except OSError as exc:
        print(f"executor: link error: {exc}", file=sys.stderr, flush=True)
    return None


def admitted(link: Link, line: bytes) -> Frame | None:
    """The request a frame carries, known to RUNNING from now on; None for a cancel (carried out here), a blank
    or malformed line, or a request without a usable id (answered with an error)."""
    if not line.strip():
        return None
    try:
        request = json.loads(line)
    except ValueError:
        return None
    if not isinstance(request, dict):
        return None
    if request.get("op") == "cancel":
        RUNNING.kill(request.get("target"))
        return None
    if not isinstance(request.get("id"), int | str):
        link.send({"id": None, "type": "error", "message": "a request needs an integer or string id"})
        return None
    RUNNING.accept(request["id"], request.get("call_id"))
    return request


def connect() -> socket.socket:
    """Connect to the gateway's socket, retrying with a capped backoff until it answers."""
    delay = 0.01
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(SOCKET_PATH)
            return sock
        except OSError:
            sock.close()
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def pump(source: socket.socket, target: socket.socket) -> None:
    """Copy one direction until end of stream and pass the half-close on; on an error, cut both ways."""
    try:
        while data := source.recv(READ_CHUNK):
            target.sendall(data)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


FORWARDS = threading.BoundedSemaphore(MAX_FORWARDS)


def socket_inode(client_port: int) -> str | None:
    """The inode of the sandboxed end of a loopback connection to the proxy address, from /proc/net/tcp."""
    local = f"0100007F:{client_port:04X}"
    remote = f"0100007F:{PROXY_ADDRESS[1]:04X}"
    with contextlib.suppress(OSError), open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                return fields[9]
    return None


def session_of(pid: str) -> int | None:
    """The Unix session id of a process (field 6 of /proc/PID/stat), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return int(stat_file.read().rpartition(")")[2].split()[3])
    except (OSError, ValueError, IndexError):
        return None


def caller_call(client: socket.socket) -> str | None:
    """The call in flight whose process tree holds the other end of `client`: every process holding it must be in
    that call's Unix session. None when there is none, or any holder is elsewhere or cannot be seen."""
    try:
        inode = socket_inode(client.getpeername()[1])
    except OSError:
        return None
    if inode is None or inode == "0":
        return None
    target = f"socket:[{inode}]"
    sessions = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        sessions.add(session_of(pid))
                        break
    if len(sessions) != 1 or None in sessions:
        return None
    return RUNNING.call_of(sessions.pop())


def forward(client: socket.socket) -> None:
    """Relay one connection made to the proxy address to the gateway's egress socket, both ways, after a first line
    naming the call that made it (`{"call": null}` for none)."""
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(EGRESS_SOCKET_PATH)
        upstream.sendall(json.dumps({"call": caller_call(client)}).encode() + b"\n")
        back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        back.start()
    except (OSError, RuntimeError):
        upstream.close()
        client.close()
        return
    pump(client, upstream)
    back.join()
    upstream.close()
    client.close()


def forward_then_release(client: socket.socket) -> None:
    try:
        forward(client)
    finally:
        FORWARDS.release()


def serve_egress(listener: socket.socket) -> None:
    """Accept connections to the proxy address for as long as the executor lives; at most MAX_FORWARDS at once."""
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            time.sleep(0.1)
            continue
        if not FORWARDS.acquire(blocking=False):
            client.close()
            continue
        try:
            threading.Thread(target=forward_then_release, args=(client,), daemon=True).start()
        except RuntimeError:
            FORWARDS.release()
            client.close()


def start_egress_forwarder() -> None:
    """Listen on 127.0.0.1:3128 before any sandboxed code runs, so nothing else can take the address."""
    try:
        listener = socket.create_server(PROXY_ADDRESS, backlog=64)
    except OSError as exc:
        print(f"executor: no egress forwarder: {exc}", file=sys.stderr, flush=True)
        return
    threading.Thread(target=serve_egress, args=(listener,), daemon=True).start()


def make_undumpable() -> None:
    """Keep same-uid sandboxed processes out of this process's memory and file descriptors via /proc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def main() -> None:
    make_undumpable()
    start_egress_forwarder()
    while True:
        sock = connect()
        try:
            serve(sock)
        except OSError as exc:
            print(f"executor: link error: {exc}", file=sys.stderr, flush=True)
        finally:
            sock.close()
            RUNNING.kill_all()


if __name__ == "__main__":
    main()
