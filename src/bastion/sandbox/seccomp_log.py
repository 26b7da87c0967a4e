"""Names the syscall behind a seccomp kill from the kernel's audit records (type=1326) in /dev/kmsg."""

import asyncio
import contextlib
import os
import re
from collections import deque
from dataclasses import dataclass

from bastion.sandbox.seccomp import syscall_name

KMSG_PATH = "/dev/kmsg"
SIGSYS = 31
RECORD_SIZE = 8192
AUDIT_RECORD = re.compile(
    r'type=1326 .*?comm="(?P<comm>[^"]*)".*? sig=(?P<sig>\d+) arch=(?P<arch>[0-9a-fA-F]+) syscall=(?P<nr>\d+)'
)


@dataclass(frozen=True)
class SeccompKill:
    """One kernel record of a process killed by a seccomp rule."""

    seq: int
    comm: str
    syscall: str


class SeccompLog:
    """Follows /dev/kmsg from the moment it is opened; best effort, silent when the log is unreadable."""

    def __init__(self, path: str = KMSG_PATH, keep: int = 256) -> None:
        self._path = path
        self._fd: int | None = None
        self._seq = 0
        self._kills: deque[SeccompKill] = deque(maxlen=keep)

    def open(self) -> bool:
        """Start following the kernel log from its current end; False when it cannot be read."""
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return False
        os.lseek(fd, 0, os.SEEK_END)
        self._fd = fd
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def mark(self) -> int:
        """The sequence number of the newest record so far: kills after it belong to later calls."""
        self._drain()
        return self._seq

    async def find(self, after: int, comm: str, wait_s: float = 0.2) -> str | None:
        """The syscall of the newest seccomp kill after `after`, preferring one whose command is `comm`."""
        if self._fd is None:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            self._drain()
            kills = [kill for kill in self._kills if kill.seq > after]
            named = [kill for kill in kills if kill.comm == comm[:15]]
            if named or (kills and loop.time() >= deadline):
                return (named or kills)[-1].syscall
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(0.01)

    def _drain(self) -> None:
        """Read every record available now; the audit ones of seccomp kills are kept."""
        if self._fd is None:
            return
        while True:
            try:
                record = os.read(self._fd, RECORD_SIZE)
            except BlockingIOError:
                return
            except BrokenPipeError:
                continue
            except OSError:
                self.close()
                return
            if not record:
                return
            self._take(record.decode("utf-8", errors="replace"))

    def _take(self, record: str) -> None:
        header, _, message = record.partition(";")
        fields = header.split(",")
        with contextlib.suppress(IndexError, ValueError):
            self._seq = max(self._seq, int(fields[1]))
        match = AUDIT_RECORD.search(message)
        if match and int(match["sig"]) == SIGSYS:
            name = syscall_name(match["arch"], int(match["nr"]))
            self._kills.append(SeccompKill(self._seq, match["comm"], name))
