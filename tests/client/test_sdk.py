"""The Python SDK (`client/`), sync and async, against a real gateway: sessions, calls, streams, typed errors."""

import httpx
import pytest

from bastion_client import (
    ApprovalRequired,
    AsyncBastionClient,
    BastionClient,
    IdempotencyConflict,
    InvalidArguments,
    InvalidRequest,
    NotFound,
    OutputChunk,
    PolicyDenied,
    Revoked,
    SessionEnded,
    TooLarge,
    TransportError,
    Unauthenticated,
)
from bastion_client.errors import error_from_response
from tests.support.gateways import ADMIN_KEY, RunningGateway


def _key(agent) -> str:
    return agent.headers["Authorization"].split()[1]


def test_session_context_manager_runs_calls_and_ends_the_session(running_gateway: RunningGateway,
                                                                  make_agent) -> None:
    dev = make_agent("developer")
    with BastionClient(running_gateway.url, _key(dev)) as client:
        with client.create_session(labels={"task": "sdk"}) as session:
            result = session.call("shell.run", command="echo sdk; exit 4")
            assert result.stdout == "sdk\n" and result.exit_code == 4 and not result.ok
            assert result.decision.allow and result.call_id.startswith("call_")
            assert session.call("fs.write", {"path": "a.txt"}, content="x").ok
            assert session.call("fs.list").data["entries"] == [{"name": "a.txt", "type": "file", "size": 1}]
            assert session.refresh().call_count == 3 and session.info.labels == {"task": "sdk"}
        assert client.get_session(session.id).status == "ended"
        with pytest.raises(SessionEnded):
            client.call(session.id, "fs.list")
        assert {t.name for t in client.tools()} >= {"shell.run", "fs.read"}


def test_stream_iterates_output_then_holds_the_result(running_gateway: RunningGateway, make_agent) -> None:
    dev = make_agent("developer")
    with BastionClient(running_gateway.url, _key(dev)) as client, client.create_session() as session:
        stream = session.stream("shell.run", command="for i in 1 2 3; do echo $i; sleep 0.1; done")
        chunks = list(stream)
        assert all(isinstance(c, OutputChunk) for c in chunks)
        assert "".join(c.data for c in chunks) == "1\n2\n3\n"
        assert stream.result is not None and stream.result.stdout == "1\n2\n3\n"
        assert stream.call_id == stream.result.call_id
        with pytest.raises(PolicyDenied):
            session.stream("fs.read", path="/etc/passwd").wait()


def test_typed_errors_carry_what_the_caller_needs(running_gateway: RunningGateway, make_agent) -> None:
    reader = make_agent("reader")
    with BastionClient(running_gateway.url, _key(reader)) as client, client.create_session() as session:
        with pytest.raises(PolicyDenied) as denied:
            session.call("shell.run", command="id")
        assert denied.value.call_id.startswith("call_") and "not granted" in denied.value.reasons[0]
        assert denied.value.status == 403 and denied.value.policy_revision
        with pytest.raises(InvalidArguments) as invalid:
            session.call("fs.read", path=5)
        assert invalid.value.errors[0]["field"] == "args.path"
        with pytest.raises(InvalidArguments):
            session.call("no.such.tool")
        with pytest.raises(TooLarge):
            session.call("fs.read", path="x", pad="y" * (5 * 1024 * 1024))
        with pytest.raises(NotFound):
            client.call("ses_0000000000000000", "fs.list")
        session.call("fs.list", idempotency_key="same")
        with pytest.raises(IdempotencyConflict):
            session.call("fs.list", {"path": "other"}, idempotency_key="same")
    with pytest.raises(Unauthenticated):
        BastionClient(running_gateway.url, "bst_not_a_key").tools()
    with pytest.raises(TransportError):
        BastionClient("http://127.0.0.1:9", "k", timeout=2).tools()
    with pytest.raises(ValueError, match="API key"):
        BastionClient(running_gateway.url, "")


def test_revocation_is_its_own_error(running_gateway: RunningGateway, make_agent, http: httpx.Client) -> None:
    dev = make_agent("developer")
    with BastionClient(running_gateway.url, _key(dev)) as client, client.create_session() as session:
        http.post("/v1/revocations", headers=running_gateway.admin,
                  json={"scope": "session", "session_id": session.id, "reason": "sdk test"})
        with pytest.raises(Revoked) as revoked:
            session.call("fs.list")
        assert revoked.value.reasons[0] == "revoked"


def test_error_mapping_covers_every_problem_status() -> None:
    def kind_of(status: int, kind: str) -> type:
        return type(error_from_response(status, {"type": f"https://bastion.dev/problems/{kind}", "title": "t",
                                                 "detail": "d", "status": status}))

    assert kind_of(415, "unsupported-media-type") is InvalidRequest
    assert kind_of(400, "malformed-json") is InvalidRequest
    assert kind_of(409, "session-ended") is SessionEnded
    assert kind_of(409, "idempotency-in-progress") is IdempotencyConflict
    assert error_from_response(429, {"retry_after_s": 1.5}).retry_after == 1.5  # type: ignore[attr-defined]


def test_admin_methods_manage_agents(running_gateway: RunningGateway) -> None:
    with BastionClient(running_gateway.url, ADMIN_KEY) as admin:
        agent = admin.create_agent("sdk-admin", roles=["reader"], labels={"team": "sdk"})
        assert agent.api_key and agent.roles == ["reader"]
        assert [a.agent_id for a in admin.agents(labels={"team": "sdk"})] == [agent.agent_id]
        changed = admin.update_agent(agent.agent_id, roles=["developer"], disabled=True)
        assert changed.roles == ["developer"] and changed.disabled
        assert agent.agent_id in {a.agent_id for a in admin.agents(disabled=True)}
        admin.update_agent(agent.agent_id, disabled=False)
        rotated = admin.rotate_key(agent.agent_id)
        assert rotated.api_key and rotated.api_key != agent.api_key
    with BastionClient(running_gateway.url, rotated.api_key) as client, client.create_session() as session:
        assert session.call("shell.run", command="echo rotated").stdout == "rotated\n"


async def test_async_client_mirrors_the_sync_one(running_gateway: RunningGateway, make_agent) -> None:
    dev, reader = make_agent("developer"), make_agent("reader")
    async with AsyncBastionClient(running_gateway.url, _key(dev)) as client:
        async with await client.create_session() as session:
            result = await session.call("python.run", code="print(6 * 7)")
            assert result.stdout == "42\n"
            stream = session.stream("shell.run", command="echo a; echo b >&2")
            seen = [(chunk.stream, chunk.data) async for chunk in stream]
            assert sorted(seen) == [("stderr", "b\n"), ("stdout", "a\n")]
            assert stream.result is not None and stream.result.exit_code == 0
        assert (await client.get_session(session.id)).status == "ended"
    async with AsyncBastionClient(running_gateway.url, _key(reader)) as client:
        session = await client.create_session()
        with pytest.raises(PolicyDenied):
            await session.call("shell.run", command="id")
        await session.close()


def test_held_call_raises_approval_required(running_gateway: RunningGateway, make_agent) -> None:
    supervised = make_agent("supervised")
    with (BastionClient(running_gateway.url, _key(supervised)) as client, client.create_session() as session,
          pytest.raises(ApprovalRequired) as held):
        session.call("shell.run", command="echo needs a human")
    assert held.value.approval_id.startswith("apr") and held.value.status == 202
