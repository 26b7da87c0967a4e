"""Only the parts of `input` a bundle reads are sent to rego-cpp, and that never changes a decision."""

import threading

import pytest

from bastion.policy.backends.inprocess import InProcessRegoEngine
from bastion.policy.backends.supervised import SupervisedRegoEngine
from bastion.policy.bundle import PolicyBundle, load_default_bundle
from bastion.policy.input_paths import input_references, project_input, referenced_input_paths
from bastion.policy.revocations import normalize_revocations, revocations_digest
from bastion.policy.validation import ValidationReport, read_upload, validate
from tests.support.policies import HEADER, call

DECISION = HEADER + ('decision := {"allow": count(deny) == 0, "reasons": sort([r | some r in deny]), '
                     '"obligations": {}}\n')


def bundle(rules: str) -> PolicyBundle:
    return PolicyBundle(modules={"decision.rego": DECISION, "rules.rego": HEADER + rules})


@pytest.mark.parametrize(("source", "paths"), [
    ('x if input.tool.name == "a"\ny if input.args["command"] == "b"',
     {("tool", "name"), ("args", "command")}),
    ('x if input.args.command\ny if count(input.args) > 1', {("args",)}),
    ('x if input.session.history[_].tool == "a"\ny if input.args[0] == 1', {("session", "history"), ("args",)}),
    ('x if data.other.input == 1\n# input\ny := "input"\nz := `input`\nw if input.tool.risk',
     {("tool", "risk")}),
    ('x := "a \\" input" if input.version', {("version",)}),
])
def test_the_reader_finds_the_paths_a_module_reads(source: str, paths: set[tuple[str, ...]]) -> None:
    assert referenced_input_paths([HEADER + source]) == paths


@pytest.mark.parametrize("source", [
    'x if object.get(input, "tool", null)',
    "x if some k in input\n",
    "x if input[k] == 1\n",
    "import input\n",
    'x if walk(input, [p, v])',
    'x := $"{input.tool.name}"',
    'x := "unterminated\ny if input.tool.name',
])
def test_any_other_use_of_input_keeps_all_of_it(source: str) -> None:
    assert referenced_input_paths([HEADER + source]) is None


def test_projection_keeps_only_the_named_subtrees_and_whole_non_objects() -> None:
    document = {"tool": {"name": "a", "risk": "low"}, "args": [1, 2], "session": {"id": "s"}, "version": 1}
    paths = frozenset({("tool", "name"), ("args", "x"), ("missing", "y")})
    assert project_input(document, paths) == {"tool": {"name": "a"}, "args": [1, 2]}
    assert project_input(document, None) is document


def test_paths_are_shown_as_rego_references() -> None:
    paths = frozenset({("tool", "name"), ("args", "file-name"), ("version",)})
    assert input_references(paths) == ['input.args["file-name"]', "input.tool.name", "input.version"]
    assert input_references(None) is None


def test_validation_reports_what_a_bundle_reads() -> None:
    def report_for(rule: str) -> ValidationReport:
        return validate(read_upload({"decision.rego": DECISION, "rules.rego": HEADER + rule}, None))

    named = report_for('deny contains "x" if input.tool.risk == "high"')
    assert named.ok and named.to_json()["reads_input"] == ["input.tool.risk"]
    assert report_for('deny contains "x" if walk(input, _)').reads_input is None


def test_the_default_library_reads_named_paths_only() -> None:
    paths = load_default_bundle().input_paths
    assert paths is not None
    assert ("session", "history") in paths and ("args",) in paths and ("version",) in paths
    assert ("session", "started_at") not in paths and ("context", "request") not in paths


def test_calls_differing_only_in_what_the_policy_does_not_read_share_a_cache_entry() -> None:
    with SupervisedRegoEngine(bundle('deny contains "no rm" if startswith(input.args.command, "rm ")'),
                              workers=1) as engine:
        first = engine.decide(call("shell.run", {"command": "ls"}, session="s-1"))
        second = engine.decide(call("shell.run", {"command": "ls"}, session="s-2"))
        denied = engine.decide(call("shell.run", {"command": "rm -rf /"}, session="s-2"))
        assert first.allow and second.allow and not denied.allow
        assert (engine.cache.hits, engine.cache.misses) == (1, 2)


def test_a_decision_already_made_is_answered_without_evaluating_and_never_stale() -> None:
    with SupervisedRegoEngine(bundle('deny contains "no rm" if startswith(input.args.command, "rm ")'),
                              workers=1) as engine:
        ls = call("shell.run", {"command": "ls"}, session="s-1")
        assert engine.decided(ls) is None
        made = engine.decide(ls)
        assert made.allow and (engine.cache.hits, engine.cache.misses) == (0, 1)
        assert engine.decided(call("shell.run", {"command": "ls"}, session="s-2")) == made
        assert (engine.cache.hits, engine.cache.misses) == (1, 1)
        assert engine.decided(call("shell.run", {"command": "rm -rf /"})) is None
        assert engine.decided(ls) == made
        assert not engine.decide(call("shell.run", {"command": "rm -rf /"})).allow
        engine.load(bundle('deny contains "no ls" if input.args.command == "ls"'))
        assert engine.decided(ls) is None
        assert engine.decide(ls).reasons == ["no ls"]
        engine.set_revocations({"agents": {"agent-1": {"reason": "detector"}}})
        assert engine.decided(ls) is None
        engine.close()
        assert engine.decided(ls) is None


def test_engines_that_keep_no_decisions_have_none_to_give() -> None:
    engine = InProcessRegoEngine(bundle('deny contains "no rm" if startswith(input.args.command, "rm ")'))
    ls = call("shell.run", {"command": "ls"})
    assert engine.decide(ls).allow and engine.decided(ls) is None


@pytest.mark.parametrize("engine_type", [InProcessRegoEngine, SupervisedRegoEngine])
def test_a_new_policy_gets_the_parts_of_input_it_reads(engine_type: type) -> None:
    engine = engine_type(bundle('deny contains "no rm" if startswith(input.args.command, "rm ")'))
    try:
        blocked = call("shell.run", {"command": "ls"}, session="s-blocked")
        assert engine.decide(blocked).allow
        engine.load(bundle('deny contains "blocked session" if input.session.id == "s-blocked"'))
        assert engine.decide(blocked).reasons == ["blocked session"]
    finally:
        if isinstance(engine, SupervisedRegoEngine):
            engine.close()


def test_every_decision_carries_the_revision_of_the_policy_that_made_it() -> None:
    """Revocations toggling under concurrent decisions: never a revoked answer labelled (and cached) as the
    unrevoked revision or the reverse, which would serve it stale once that revision came back."""
    source = 'deny contains "revoked" if data.bastion.revocations.agents[input.principal.id]'
    revoked = normalize_revocations({"agents": {"agent-1": {}}})
    policy = bundle(source)
    revoked_revision = f"{policy.revision}-{revocations_digest(revoked)}"
    mislabelled: list[str] = []
    stop = threading.Event()

    with SupervisedRegoEngine(policy, workers=2) as engine:
        def decide_many(n: int) -> None:
            while not stop.is_set():
                decision = engine.decide(call("fs.list", {}, agent="agent-1", session=f"s-{n}"))
                if (decision.reasons == ["revoked"]) != (decision.revision == revoked_revision):
                    mislabelled.append(f"{decision.reasons} under {decision.revision}")

        threads = [threading.Thread(target=decide_many, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for toggle in range(400):
            engine.set_revocations(revoked if toggle % 2 == 0 else {})
        stop.set()
        for thread in threads:
            thread.join()
    assert mislabelled == []
