"""Idempotency keys and custom tool versions on PostgreSQL, through the shipped migrations."""

import pytest

from bastion.gateway.api.idempotency import IdempotencyStore, StoredAnswer
from bastion.gateway.api.problems import Problem
from bastion.gateway.db.engine import make_engine, migrate
from bastion.gateway.tools.catalog import ToolCatalog
from bastion.gateway.tools.custom import CustomToolSpec

pytestmark = pytest.mark.postgres
ECHO = {"type": "object", "required": ["x"], "properties": {"x": {"type": "string"}}}


async def test_idempotency_and_tool_versions_on_postgres(fresh_postgres: str) -> None:
    migrate(fresh_postgres)
    engine = make_engine(fresh_postgres)
    try:
        catalog = ToolCatalog(engine, default_timeout_s=10.0)
        for description in ("first", "second"):
            catalog.register(CustomToolSpec(name="util.echo", version=0, description=description, input_schema=ECHO,
                                            command=["echo", "{x}"]), "admin")
        reloaded = ToolCatalog(engine, default_timeout_s=10.0)
        assert reloaded.load() == 1 and reloaded.tools["util.echo"].version == "2"
        assert [row.description for row in reloaded.history("util.echo")] == ["first", "second"]

        store = IdempotencyStore(engine, b"k" * 32, ttl_s=60)
        runs = []

        async def produce() -> StoredAnswer:
            runs.append(1)
            return StoredAnswer(201, {"session_id": "ses_1"})

        first = await store.run("agt_1", "key-1", "digest-a", produce)
        again = await store.run("agt_1", "key-1", "digest-a", produce)
        assert first.body == again.body and again.headers["idempotency-replayed"] == "true" and runs == [1]
        with pytest.raises(Problem) as reused:
            await store.run("agt_1", "key-1", "digest-b", produce)
        assert reused.value.status == 409 and reused.value.kind == "idempotency-key-reused"
        other_agent = await store.run("agt_2", "key-1", "digest-b", produce)
        assert other_agent.status_code == 201 and runs == [1, 1]
    finally:
        engine.dispose()
