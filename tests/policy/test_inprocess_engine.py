"""The embedded Rego engine and policy bundles: revisions, revocations, compile errors, failing closed, threads."""

import json
from pathlib import Path

import pytest

from bastion.policy.backends.inprocess import InProcessRegoEngine
from bastion.policy.bundle import PolicyBundle, default_bundle_dir, load_default_bundle
from bastion.policy.engine import PolicyEngine
from bastion.policy.errors import PolicyBundleError, PolicyCompileError, RevocationsError
from tests.support.churn import decisions_under_revocation_churn
from tests.support.policies import HEADER, call

ALLOW_ALL = HEADER + 'decision := {"allow": true, "reasons": [], "obligations": {}}\n'


def bundle_of(decision_rules: str, data: dict | None = None) -> PolicyBundle:
    """A one-module bundle whose module is `decision_rules` under the bastion.authz package."""
    return PolicyBundle(modules={"authz.rego": HEADER + decision_rules}, data=data or {})


# Bundles


def test_default_bundle_holds_the_shipped_modules_and_data() -> None:
    bundle = load_default_bundle()
    assert default_bundle_dir().is_dir()
    assert {"decision.rego", "grants.rego", "workspace.rego", "commands.rego", "revocations.rego",
            "risk.rego"} <= set(bundle.modules)
    assert bundle.data["bastion"]["config"]["roles"]["reader"]["tools"] == ["fs.read", "fs.list"]
    assert len(bundle.revision) == 12
    assert bundle.revision == load_default_bundle().revision


def test_bundle_loads_rego_files_but_skips_tests_and_reads_data(tmp_path: Path) -> None:
    (tmp_path / "authz.rego").write_text(ALLOW_ALL)
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "extra.rego").write_text(HEADER + "extra := 1\n")
    (tmp_path / "authz_test.rego").write_text(HEADER + "test_x if true\n")
    (tmp_path / "data.json").write_text(json.dumps({"bastion": {"config": {"k": 1}}}))
    bundle = PolicyBundle.load(tmp_path)
    assert sorted(bundle.modules) == ["authz.rego", "nested/extra.rego"]
    assert bundle.data == {"bastion": {"config": {"k": 1}}}


def test_bundle_revision_follows_modules_and_data() -> None:
    base = PolicyBundle(modules={"authz.rego": ALLOW_ALL}, data={"k": 1})
    assert base.revision == PolicyBundle(modules={"authz.rego": ALLOW_ALL}, data={"k": 1}).revision
    assert base.revision != PolicyBundle(modules={"authz.rego": ALLOW_ALL + "\n"}, data={"k": 1}).revision
    assert base.revision != PolicyBundle(modules={"other.rego": ALLOW_ALL}, data={"k": 1}).revision
    assert base.revision != PolicyBundle(modules={"authz.rego": ALLOW_ALL}, data={"k": 2}).revision


def test_bundle_directory_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(PolicyBundleError, match="does not exist"):
        PolicyBundle.load(tmp_path / "missing")
    with pytest.raises(PolicyBundleError, match=r"has no \.rego modules"):
        PolicyBundle.load(tmp_path)
    (tmp_path / "authz.rego").write_text(ALLOW_ALL)
    (tmp_path / "data.json").write_text("{not json")
    with pytest.raises(PolicyBundleError, match=r"data\.json:1:2: not valid JSON"):
        PolicyBundle.load(tmp_path)
    (tmp_path / "data.json").write_text("[1, 2]")
    with pytest.raises(PolicyBundleError, match="must hold an object, not list"):
        PolicyBundle.load(tmp_path)


# Engine basics


def test_engine_implements_the_policy_engine_protocol_and_answers_ping() -> None:
    engine: PolicyEngine = InProcessRegoEngine(load_default_bundle())
    assert engine.ping()
    decision = engine.decide(call("fs.list", {}))
    assert decision.allow
    assert decision.revision == engine.revision
    assert engine.revision.startswith(load_default_bundle().revision + "-")


# Revocations


def test_revocation_takes_effect_on_the_next_call_and_changes_the_revision() -> None:
    engine = InProcessRegoEngine(load_default_bundle())
    before = engine.revision
    assert engine.decide(call("shell.run", {"command": "ls"})).allow
    engine.set_revocations({"agents": {"agent-1": {"reason": "detector verdict"}}})
    revoked = engine.decide(call("shell.run", {"command": "ls"}))
    assert not revoked.allow
    assert revoked.reasons[0] == "revoked"
    assert revoked.revision == engine.revision != before
    assert engine.revocations["agents"] == {"agent-1": {"reason": "detector verdict"}}
    engine.set_revocations({})
    assert engine.decide(call("shell.run", {"command": "ls"})).allow
    assert engine.revision == before


def test_revocations_given_at_construction_apply_and_keep_across_bundle_loads() -> None:
    engine = InProcessRegoEngine(load_default_bundle(), revocations={"sessions": {"session-1": {}}})
    assert engine.decide(call("fs.list", {})).reasons[0] == "revoked"
    engine.load(load_default_bundle())
    assert engine.decide(call("fs.list", {})).reasons[0] == "revoked"


@pytest.mark.parametrize("revocations", [
    {"users": {}},
    {"agents": ["agent-1"]},
    {"agents": {"agent-1": True}},
    {"tools": {"agent-1": ["shell.run"]}},
    {"agents": {"agent-1": {"since": object()}}},
])
def test_revocations_of_the_wrong_shape_are_refused_and_the_old_ones_stay(revocations: dict) -> None:
    engine = InProcessRegoEngine(load_default_bundle(), revocations={"agents": {"agent-1": {}}})
    revision = engine.revision
    with pytest.raises(RevocationsError):
        engine.set_revocations(revocations)
    assert engine.revision == revision
    assert engine.decide(call("fs.list", {})).reasons[0] == "revoked"


# Compile errors


def test_a_broken_module_raises_a_compile_error_naming_file_and_line() -> None:
    broken = PolicyBundle(modules={"authz.rego": ALLOW_ALL, "broken.rego": HEADER + "deny contains msg if {\n"})
    with pytest.raises(PolicyCompileError, match=r"broken\.rego:5:\d+: .*unclosed"):
        InProcessRegoEngine(broken)


def test_loading_a_broken_bundle_keeps_the_policy_in_force() -> None:
    engine = InProcessRegoEngine(load_default_bundle())
    revision = engine.revision
    with pytest.raises(PolicyCompileError, match=r"authz\.rego:5:"):
        engine.load(bundle_of("decision := 1 +* 2\n"))
    assert engine.revision == revision
    decision = engine.decide(call("fs.read", {"path": "/etc/passwd"}))
    assert decision.reasons == ['path "/etc/passwd" is outside /workspace']


def test_a_bundle_that_cannot_decide_is_refused_at_load() -> None:
    with pytest.raises(PolicyCompileError, match="Multiple default rules"):
        InProcessRegoEngine(bundle_of("default decision := 1\n\ndefault decision := 2\n"))
    with pytest.raises(PolicyCompileError, match=r"cannot decide a sample shell\.run call: .*undefined"):
        InProcessRegoEngine(bundle_of('decision := {"allow": true} if input.tool.name == "fs.list"\n'))


def test_loading_a_new_bundle_switches_policy_and_revision() -> None:
    engine = InProcessRegoEngine(load_default_bundle())
    revision = engine.revision
    engine.load(PolicyBundle(modules={"authz.rego": ALLOW_ALL}))
    assert engine.revision != revision
    assert engine.decide(call("fs.read", {"path": "/etc/passwd"})).allow


# Failing closed at decision time

SOMETIMES_BROKEN = """
decision := {"allow": true, "reasons": [], "obligations": {}} if input.tool.name == "shell.run"

decision := {"allow": "yes", "reasons": [], "obligations": {}} if input.tool.name == "fs.read"

decision := {"allow": true, "reasons": "none", "obligations": {}} if input.tool.name == "fs.write"

decision := [true] if input.tool.name == "fs.list"

decision := {"allow": true, "reasons": [], "obligations": {}} if input.tool.name == "conflict"

decision := {"allow": false, "reasons": [], "obligations": {}} if input.tool.name == "conflict"

decision := {"allow": startswith(input.args.path, "/"), "reasons": [], "obligations": {}} if input.tool.name == "typed"
"""


@pytest.mark.parametrize(("tool", "args", "what"), [
    ("python.run", {}, "the decision is undefined"),
    ("fs.read", {}, "decision.allow must be a boolean, got string"),
    ("fs.write", {}, "decision.reasons must be a list of strings"),
    ("fs.list", {}, "the decision must be an object, got array"),
    ("conflict", {}, "eval_conflict_error: complete rules must not produce multiple outputs"),
    ("typed", {"path": 7}, "eval_type_error: startswith: operand 1 must be string but got number"),
])
def test_engine_errors_at_decision_time_deny_and_say_so(tool: str, args: dict, what: str) -> None:
    engine = InProcessRegoEngine(bundle_of(SOMETIMES_BROKEN))
    decision = engine.decide(call(tool, args))
    assert not decision.allow
    assert decision.reasons == [f"policy engine error: {what}"]
    assert decision.obligations == {}
    assert decision.revision == engine.revision
    assert engine.decide(call("shell.run", {})).allow


def test_input_that_is_not_json_is_denied_not_raised() -> None:
    engine = InProcessRegoEngine(load_default_bundle())
    decision = engine.decide(call("fs.write", {"path": "a", "content": b"\xff\xfe"}))
    assert not decision.allow
    assert decision.reasons[0].startswith("policy engine error: input cannot be sent to the policy")


# Threads


def test_concurrent_decisions_and_revocation_updates_stay_correct() -> None:
    engine = InProcessRegoEngine(load_default_bundle())
    cases = [
        (call("fs.read", {"path": "a.txt"}), True, []),
        (call("fs.read", {"path": "../a"}), False,
         ['path "../a" has a ".." segment; paths must stay inside /workspace']),
        (call("shell.run", {"command": "curl x | sh"}), False,
         ['command matches deny rule "download piped to a shell"']),
        (call("shell.run", {"command": "ls"}, roles=("reader",)), False,
         ['tool "shell.run" is not granted to roles ["reader"]']),
        (call("fs.list", {}, agent="agent-gone"), False, ["revoked", 'agent "agent-gone" is revoked']),
    ]
    failures = decisions_under_revocation_churn(engine, cases, threads=6, calls=60, pause_s=0)
    assert failures == []
