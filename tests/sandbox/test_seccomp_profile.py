"""The seccomp profile file: stricter than Docker's default in exactly the ways seccomp.md promises."""

from typing import Any

from bastion.sandbox.seccomp import KILLED_SYSCALL_NUMBERS, killed_syscalls, load_profile, syscall_name

ESCAPE_CALLS = {
    "ptrace", "process_vm_readv", "process_vm_writev", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "userfaultfd", "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "mount", "umount2",
    "mount_setattr", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "unshare", "setns",
    "pivot_root", "chroot", "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
}  # fmt: skip
NAMESPACE_FLAGS = 0x7E020000


def rules_for(name: str) -> list[dict[str, Any]]:
    return [rule for rule in load_profile()["syscalls"] if name in rule["names"]]


def test_default_action_is_eperm() -> None:
    profile = load_profile()
    assert (profile["defaultAction"], profile["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", 1)


def test_escape_calls_kill_the_process_and_are_allowed_nowhere() -> None:
    assert killed_syscalls() == ESCAPE_CALLS
    for name in ESCAPE_CALLS:
        assert [rule["action"] for rule in rules_for(name)] == ["SCMP_ACT_KILL_PROCESS"]


def test_socket_is_limited_to_unix_and_inet_families() -> None:
    rules = rules_for("socket")
    assert all(rule["action"] == "SCMP_ACT_ALLOW" and len(rule["args"]) == 1 for rule in rules)
    assert {(rule["args"][0]["index"], rule["args"][0]["op"], rule["args"][0]["value"]) for rule in rules} == {
        (0, "SCMP_CMP_EQ", 1),
        (0, "SCMP_CMP_EQ", 2),
        (0, "SCMP_CMP_EQ", 10),
    }
    assert rules_for("socketcall") == []


def test_clone_is_allowed_only_without_namespace_flags() -> None:
    (rule,) = rules_for("clone")
    assert rule["action"] == "SCMP_ACT_ALLOW"
    assert rule["args"] == [{"index": 0, "value": NAMESPACE_FLAGS, "op": "SCMP_CMP_MASKED_EQ"}]
    (clone3,) = rules_for("clone3")
    assert (clone3["action"], clone3["errnoRet"]) == ("SCMP_ACT_ERRNO", 38)


def test_personality_keeps_dockers_argument_rule() -> None:
    rules = rules_for("personality")
    assert {rule["args"][0]["value"] for rule in rules} == {0, 8, 131072, 131080, 4294967295}
    assert all(rule["args"][0]["op"] == "SCMP_CMP_EQ" for rule in rules)


def test_no_rule_depends_on_capabilities_and_32_bit_abis_are_not_loaded() -> None:
    profile = load_profile()
    assert not any("caps" in rule.get("includes", {}) or "excludes" in rule for rule in profile["syscalls"])
    assert all(arch["subArchitectures"] == [] for arch in profile["archMap"])


def test_killed_syscalls_are_named_on_both_architectures() -> None:
    for numbers in KILLED_SYSCALL_NUMBERS.values():
        assert set(numbers) == ESCAPE_CALLS
    assert syscall_name("c000003e", 101) == "ptrace"
    assert syscall_name("c00000b7", 117) == "ptrace"
    assert syscall_name("40000003", 20) == "i386#20"
