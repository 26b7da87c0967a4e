"""Admin routes for policy versions: upload (validated and tested), list, diff, activate, roll back,
shadow, replay and explain."""

import asyncio
from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from bastion.gateway.api.deps import AdminPrincipal, GatewayDep
from bastion.gateway.api.openapi import problems
from bastion.gateway.api.problems import Problem
from bastion.gateway.audit import AuditStoreError
from bastion.gateway.db.tables import PolicyState, PolicyVersion, ShadowResult
from bastion.gateway.gateway import Gateway
from bastion.gateway.policy_versions.control import ShadowUnsupported
from bastion.gateway.policy_versions.store import StaleState
from bastion.policy.diff import bundle_diff
from bastion.policy.errors import PolicyBundleError, PolicyCompileError
from bastion.policy.validation import read_upload, validate

router = APIRouter(prefix="/v1/policies", tags=["policies"])

VersionNumber = Annotated[int, Path(ge=0, le=2**31 - 1, description="Policy version number (0 = bundled default)")]
DEFAULT_VERSION = 0
T = TypeVar("T")


class PolicyUpload(BaseModel):
    """A policy bundle: `.rego` files (tests as `*_test.rego`) by name, and its data document."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [{
        "files": {"authz.rego": "package bastion.authz\n...", "authz_test.rego": "package bastion.authz_test\n..."},
        "data": {"bastion": {"config": {}}}, "author": "secops@example.com", "message": "deny wget"}]}}

    files: dict[str, str] = Field(min_length=1, max_length=200)
    data: dict[str, Any] | None = None
    author: str = Field(min_length=1, max_length=200)
    message: str = Field(min_length=1, max_length=2000)


class PolicyVersionSummary(BaseModel):
    """A stored version without its sources."""

    version: int
    revision: str
    author: str
    message: str
    created_by: str
    created_at: datetime
    tests_passed: int
    files: list[str]

    @classmethod
    def of(cls, row: PolicyVersion) -> "PolicyVersionSummary":
        """Build from a table row."""
        return cls(version=row.version or 0, revision=row.revision, author=row.author, message=row.message,
                   created_by=row.created_by, created_at=row.created_at, tests_passed=row.tests_passed,
                   files=sorted(row.files))


class PolicyVersionPublic(PolicyVersionSummary):
    """A stored version with its sources and data."""

    sources: dict[str, str]
    data: dict[str, Any]


class PolicyStatePublic(BaseModel):
    """Which version is active (null: the bundled default), which was before, which is shadowed."""

    active_version: int | None
    previous_version: int | None
    shadow_version: int | None
    generation: int
    changed_by: str | None
    changed_at: datetime
    revision: str

    @classmethod
    def of(cls, row: PolicyState, revision: str) -> "PolicyStatePublic":
        """Build from the state row and the revision this worker has in force."""
        return cls(active_version=row.active_version, previous_version=row.previous_version,
                   shadow_version=row.shadow_version, generation=row.generation, changed_by=row.changed_by,
                   changed_at=row.changed_at, revision=revision)


class PolicyListing(PolicyStatePublic):
    """The state and every version, newest first."""

    versions: list[PolicyVersionSummary]


class Rollback(BaseModel):
    """Roll back to `to` (a version number; 0 is the bundled default), or to the version active before."""

    model_config = {"extra": "forbid"}

    to: int | None = Field(default=None, ge=0, le=2**31 - 1)


class Replay(BaseModel):
    """How many of the most recent audited decisions to replay."""

    model_config = {"extra": "forbid"}

    limit: int = Field(default=1000, ge=1, le=100_000)


class EvalRequest(BaseModel):
    """An input document to decide (and explain) with a version, by default the active policy."""

    model_config = {"extra": "forbid"}

    input: dict[str, Any]
    version: int | None = Field(default=None, ge=0, le=2**31 - 1)


class ShadowDifference(BaseModel):
    """One live call the shadow version decided differently."""

    call_id: str
    agent_id: str
    tool: str
    active_allow: bool
    shadow_allow: bool
    active_reasons: list[str]
    shadow_reasons: list[str]
    created_at: datetime

    @classmethod
    def of(cls, row: ShadowResult) -> "ShadowDifference":
        """Build from a table row."""
        return cls.model_validate(row, from_attributes=True)


class ShadowReport(BaseModel):
    """What shadowing a version has shown so far."""

    shadow_version: int
    compared: int
    differing: int
    differences: list[ShadowDifference]


async def _answer(work: Awaitable[T]) -> T:
    """Run a control operation, turning its errors into specific problems."""
    try:
        return await work
    except PolicyBundleError as exc:
        raise Problem(422, "invalid-bundle", "Invalid policy bundle", str(exc)) from exc
    except PolicyCompileError as exc:
        raise Problem(422, "policy-compile-error", "Policy does not compile",
                      f"{exc}. The policy in force is unchanged.") from exc
    except LookupError as exc:
        raise Problem(404, "unknown-policy-version", "Unknown policy version", str(exc)) from exc
    except (StaleState, ShadowUnsupported) as exc:
        raise Problem(409, "policy-conflict", "Policy change refused", str(exc)) from exc
    except AuditStoreError as exc:
        raise Problem(503, "audit-unavailable", "Audit store unavailable",
                      f"The change could not be audited, so it was undone: {exc}") from exc


@router.post("", status_code=201, response_model=PolicyVersionSummary,
             responses={422: {"description": "Compile, schema or test failures (errors[] with file, line, column)"}})
async def upload_policy(body: PolicyUpload, admin: AdminPrincipal, gateway: GatewayDep) -> PolicyVersionSummary:
    """Validate a bundle (compile, schema, sample decision, its tests) and store it as a new version."""
    report, row = await _answer(gateway.policy_control.upload(body.files, body.data, body.author, body.message,
                                                              admin.id))
    if row is None:
        body_json = report.to_json()
        summary = "; ".join(error["text"] for error in body_json["errors"]) or "; ".join(
            f"{t['name']} ({t['file']}:{t['line']}): {t['error']}" for t in body_json["tests"]["failed"])
        raise Problem(422, "policy-rejected", "Policy rejected",
                      f"The bundle was not stored: {summary}. The policy in force is unchanged.",
                      errors=body_json["errors"], tests=body_json["tests"])
    return PolicyVersionSummary.of(row)


@router.post("/validate")
async def validate_policy(body: PolicyUpload, _admin: AdminPrincipal, gateway: GatewayDep) -> dict[str, Any]:
    """Validate and test a bundle without storing it."""
    upload = await _answer(asyncio.to_thread(read_upload, body.files, body.data))
    report = await asyncio.to_thread(validate, upload, gateway.policy.revocations)
    return report.to_json()


@router.get("", response_model=PolicyListing)
async def list_policies(_admin: AdminPrincipal, gateway: GatewayDep) -> PolicyListing:
    """The policy state and every stored version."""
    state = await asyncio.to_thread(gateway.policy_store.state)
    rows = await asyncio.to_thread(gateway.policy_store.versions)
    return PolicyListing(**PolicyStatePublic.of(state, gateway.policy.revision).model_dump(),
                         versions=[PolicyVersionSummary.of(row) for row in rows])


@router.get("/diff", responses=problems(404))
async def diff_policies(a: Annotated[int, Query(ge=0, le=2**31 - 1)], b: Annotated[int, Query(ge=0, le=2**31 - 1)],
                        _admin: AdminPrincipal, gateway: GatewayDep) -> dict[str, Any]:
    """Unified diffs of every file that differs between versions `a` and `b` (0: the bundled default)."""
    old_upload = await _answer(gateway.policy_control.sources(a))
    new_upload = await _answer(gateway.policy_control.sources(b))
    files = bundle_diff(old_upload.files, old_upload.bundle.data, new_upload.files, new_upload.bundle.data,
                        f"v{a}", f"v{b}")
    return {"a": a, "b": b, "files": files}


@router.post("/rollback", response_model=PolicyStatePublic, responses=problems(404, 409))
async def rollback_policy(admin: AdminPrincipal, gateway: GatewayDep,
                          body: Rollback | None = None) -> PolicyStatePublic:
    """Put the previously active version (or `to`) back in force on every worker; audited."""
    to = (body or Rollback()).to
    if to == DEFAULT_VERSION:
        state = await _answer(gateway.policy_control.activate(None, admin.id, kind="policy_rolled_back"))
    else:
        state = await _answer(gateway.policy_control.rollback(admin.id, to))
    return PolicyStatePublic.of(state, gateway.policy.revision)


@router.get("/shadow/report", response_model=ShadowReport, responses=problems(409))
async def shadow_report(_admin: AdminPrincipal, gateway: GatewayDep,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> ShadowReport:
    """Live calls where the shadow version decided differently from the active one."""
    state = await asyncio.to_thread(gateway.policy_store.state)
    if state.shadow_version is None:
        raise Problem(409, "no-shadow", "No shadow policy",
                      "No version is shadowed. Start with POST /v1/policies/{version}/shadow.")
    compared, differing = await asyncio.to_thread(gateway.policy_store.shadow_counts, state.shadow_version)
    rows = await asyncio.to_thread(gateway.policy_store.shadow_results, state.shadow_version, True, limit)
    return ShadowReport(shadow_version=state.shadow_version, compared=compared, differing=differing,
                        differences=[ShadowDifference.of(row) for row in rows])


@router.delete("/shadow", response_model=PolicyStatePublic)
async def stop_shadow(admin: AdminPrincipal, gateway: GatewayDep) -> PolicyStatePublic:
    """Stop evaluating a shadow version."""
    state = await _answer(gateway.policy_control.shadow(None, admin.id))
    return PolicyStatePublic.of(state, gateway.policy.revision)


@router.post("/eval", responses=problems(404))
async def eval_policy(body: EvalRequest, _admin: AdminPrincipal, gateway: GatewayDep) -> dict[str, Any]:
    """Decide an input with a version (default: active) and name the rules that produced each reason."""
    explanation = await _answer(gateway.policy_control.explain(body.input, body.version))
    return explanation.to_json()


@router.get("/{version}", response_model=PolicyVersionPublic)
async def get_policy(version: VersionNumber, _admin: AdminPrincipal, gateway: GatewayDep) -> PolicyVersionPublic:
    """One version with its sources and data."""
    row = await _version(gateway, version)
    return PolicyVersionPublic(**PolicyVersionSummary.of(row).model_dump(), sources=row.files, data=row.data)


@router.post("/{version}/activate", response_model=PolicyStatePublic)
async def activate_policy(version: VersionNumber, admin: AdminPrincipal, gateway: GatewayDep) -> PolicyStatePublic:
    """Put a version (0: the bundled default) in force on every worker within about a second; audited."""
    state = await _answer(gateway.policy_control.activate(version or None, admin.id))
    return PolicyStatePublic.of(state, gateway.policy.revision)


@router.post("/{version}/shadow", response_model=PolicyStatePublic)
async def start_shadow(version: VersionNumber, admin: AdminPrincipal, gateway: GatewayDep) -> PolicyStatePublic:
    """Evaluate a version beside the active one on live calls; GET /v1/policies/shadow/report shows differences."""
    state = await _answer(gateway.policy_control.shadow(version, admin.id))
    return PolicyStatePublic.of(state, gateway.policy.revision)


@router.post("/{version}/replay")
async def replay_policy(version: VersionNumber, _admin: AdminPrincipal, gateway: GatewayDep,
                        body: Replay | None = None) -> dict[str, Any]:
    """Decide the last N audited calls with a version: how many would flip allow→deny and deny→allow."""
    report = await _answer(gateway.policy_control.replay(version, (body or Replay()).limit))
    return report.to_json()


async def _version(gateway: Gateway, number: int) -> PolicyVersion:
    row = await asyncio.to_thread(gateway.policy_store.version, number)
    if row is None:
        raise Problem(404, "unknown-policy-version", "Unknown policy version",
                      f"No policy version {number}; GET /v1/policies lists them.")
    return row
