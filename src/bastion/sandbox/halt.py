"""Stopping a sandbox at once: SIGKILL to its container's init process through a pidfd.

A pidfd names one process for good, so a kill can never reach a later process that reused the pid. The
pidfd is only trusted when the process sits in the container's own cgroup (a gateway in another pid
namespace than the engine gets None and falls back to the engine's kill)."""

import contextlib
import os
import signal
from pathlib import Path


def open_init(pid: int, container_id: str) -> int | None:
    """A pidfd of the container's init process `pid`, or None when it cannot be had safely here."""
    if pid <= 0 or not container_id:
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        in_container = container_id in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        in_container = False
    if not in_container:
        os.close(pidfd)
        return None
    return pidfd


def kill_now(pidfd: int) -> bool:
    """SIGKILL the process (its pid namespace dies with it); True when it is dead or dying."""
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return True


def close(pidfd: int | None) -> None:
    """Release a pidfd (None is fine)."""
    if pidfd is not None:
        with contextlib.suppress(OSError):
            os.close(pidfd)
