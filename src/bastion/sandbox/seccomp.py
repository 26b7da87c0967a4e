"""The sandbox seccomp profile (seccomp.json) and the names of the syscalls it kills the process for."""

import json
from functools import cache
from pathlib import Path

PROFILE_PATH = Path(__file__).with_name("seccomp.json")

AUDIT_ARCHES = {"c000003e": "x86_64", "c00000b7": "aarch64", "40000003": "i386", "40000028": "arm"}

KILLED_SYSCALL_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "userfaultfd": 323, "keyctl": 250, "add_key": 248,
        "request_key": 249, "bpf": 321, "perf_event_open": 298, "mount": 165, "umount2": 166,
        "mount_setattr": 442, "move_mount": 429, "open_tree": 428, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "unshare": 272, "setns": 308, "pivot_root": 155, "chroot": 161,
        "init_module": 175, "finit_module": 313, "delete_module": 176, "kexec_load": 246,
        "kexec_file_load": 320,
    },
    "aarch64": {
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "userfaultfd": 282, "keyctl": 219, "add_key": 217,
        "request_key": 218, "bpf": 280, "perf_event_open": 241, "mount": 40, "umount2": 39,
        "mount_setattr": 442, "move_mount": 429, "open_tree": 428, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "unshare": 97, "setns": 268, "pivot_root": 41, "chroot": 51,
        "init_module": 105, "finit_module": 273, "delete_module": 106, "kexec_load": 104,
        "kexec_file_load": 294,
    },
}  # fmt: skip


def load_profile() -> dict:
    """The profile as a dict, read from the JSON file shipped beside this module."""
    return json.loads(PROFILE_PATH.read_text())


@cache
def profile_text() -> str:
    """The profile as compact JSON, ready for Docker's `seccomp=<json>` security option."""
    return json.dumps(load_profile(), separators=(",", ":"))


def killed_syscalls() -> set[str]:
    """Names of every syscall the profile answers with SCMP_ACT_KILL_PROCESS."""
    return {
        name
        for rule in load_profile()["syscalls"]
        if rule["action"] == "SCMP_ACT_KILL_PROCESS"
        for name in rule["names"]
    }


def syscall_name(audit_arch: str, number: int) -> str:
    """Name a syscall from an audit record's arch and number; unknown ones read like `i386#20`."""
    arch = AUDIT_ARCHES.get(audit_arch.lower(), audit_arch)
    for name, known in KILLED_SYSCALL_NUMBERS.get(arch, {}).items():
        if known == number:
            return name
    return f"{arch}#{number}"
