"""Policy versions, the policy state and the facts about earlier calls, on real SQLite and PostgreSQL."""


import pytest
from alembic import command
from sqlalchemy import Engine, inspect

from bastion.gateway.audit.log import AuditEntry, AuditLog
from bastion.gateway.calls.facts import CallFacts
from bastion.gateway.db.engine import alembic_config, make_engine, migrate
from bastion.gateway.policy_versions.store import PolicyStore, StaleState, upload_of
from bastion.policy.bundle import default_bundle_dir
from bastion.policy.bundle_files import read_bundle_source
from bastion.policy.validation import read_upload

POLICY_TABLES = {"policy_versions", "policy_state", "approvals", "policy_shadow_results"}


def test_migration_0003_creates_and_drops_the_policy_tables(database_url: str, engine: Engine) -> None:
    assert set(inspect(engine).get_table_names()) >= POLICY_TABLES
    state = PolicyStore(engine).state()
    assert (state.generation, state.active_version, state.shadow_version) == (0, None, None)
    command.downgrade(alembic_config(database_url), "0002")
    engine.dispose()
    assert not POLICY_TABLES & set(inspect(engine).get_table_names())
    migrate(database_url)
    engine.dispose()
    assert PolicyStore(engine).state().generation == 0


def test_versions_round_trip_and_state_changes_are_compare_and_set(engine: Engine) -> None:
    store = PolicyStore(engine)
    upload = read_upload(*read_bundle_source(default_bundle_dir()))
    first = store.add_version(upload, "alice", "first", "admin", tests_passed=8)
    second = store.add_version(upload, "bob", "second", "admin", tests_passed=8)
    assert (first.version, second.version) == (1, 2)
    assert [row.version for row in store.versions()] == [2, 1]
    stored = store.version(1)
    assert stored is not None and upload_of(stored).bundle.revision == upload.bundle.revision
    assert upload_of(stored).tests == upload.tests
    changed = store.change_state(0, "admin", active_version=1, previous_version=None)
    assert (changed.generation, changed.active_version, changed.changed_by) == (1, 1, "admin")
    with pytest.raises(StaleState):
        store.change_state(0, "someone-else", active_version=2)
    assert store.state().active_version == 1


def test_call_facts_give_the_sessions_last_calls_from_the_audit_log(engine: Engine) -> None:
    audit = AuditLog(engine)
    try:
        for n in range(25):
            audit.append([AuditEntry(kind="decision", call_id=f"c{n}", agent_id="agt_1", session_id="ses_1",
                                     tool="fs.read" if n % 2 else "shell.run", allow=n != 24,
                                     input={"args": {"path": f"p{n}", "command": "x" * 300, "content": "secret",
                                                     "url": 7}})])
        audit.append([AuditEntry(kind="decision", call_id="other", agent_id="agt_2", session_id="ses_2",
                                 tool="fs.read", allow=True, input={"args": {}})])
        audit.append([AuditEntry(kind="result", call_id="c1", agent_id="agt_1", session_id="ses_1", tool="fs.read")])
        history = CallFacts(engine).load_history("ses_1")
    finally:
        audit.close()
    assert [entry.args["path"] for entry in history] == [f"p{n}" for n in range(5, 25)]
    assert history[-1].allow is False and history[0].tool == "fs.read"
    assert len(history[0].args["command"]) == 256
    assert set(history[0].args) == {"path", "command", "url"} and history[0].args["url"] == "7"
    assert CallFacts(engine).load_history("ses_new") == []


def test_rate_counts_cover_allowed_calls_of_the_last_minute() -> None:
    facts = CallFacts(make_engine("sqlite://"))
    for tool, allow in [("fs.read", True), ("shell.run", True), ("shell.run", False), ("shell.run", True)]:
        facts.record("agt_1", "ses_1", tool, allow, {})
    facts.record("agt_2", "ses_2", "shell.run", True, {})
    counts = facts.rates("agt_1", "shell.run")
    assert (counts.agent_calls_1m, counts.tool_calls_1m) == (3, 2)
    assert facts.rates("agt_3", "fs.read").agent_calls_1m == 0


def test_a_session_started_here_keeps_its_history_in_memory_as_the_audit_log_would_give_it(engine: Engine) -> None:
    facts = CallFacts(engine)
    facts.started("ses_live")
    for n in range(22):
        facts.record("agt_1", "ses_live", "fs.read" if n % 2 else "shell.run", n != 21,
                     {"path": f"p{n}", "command": "x" * 300, "url": 7, "host": None, "content": "not kept"})
    history = facts.known_history("ses_live")
    assert history is not None and [entry.args["path"] for entry in history] == [f"p{n}" for n in range(2, 22)]
    assert history[-1].allow is False and len(history[0].args["command"]) == 256
    assert set(history[0].args) == {"path", "command", "url"} and history[0].args["url"] == "7"
    facts.forget("ses_live")
    assert facts.known_history("ses_live") is None
    assert facts.known_history("ses_unknown") is None
    facts.record("agt_1", "ses_unknown", "fs.read", True, {"path": "x"})
    assert facts.known_history("ses_unknown") is None
