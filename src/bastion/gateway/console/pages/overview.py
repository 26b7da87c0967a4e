"""The overview: calls per second, decisions by outcome, revocations, detector lag and the warm pool, live."""

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from bastion.gateway.api.deps import gateway_of
from bastion.gateway.audit import AuditFilter, audit_stats
from bastion.gateway.console.auth import ConsoleOperator
from bastion.gateway.console.charts import Bar, decision_bars
from bastion.gateway.console.render import render
from bastion.gateway.db.tables import utcnow
from bastion.gateway.gateway import Gateway

router = APIRouter(prefix="/console")
WINDOW_MINUTES = 60


@dataclass(frozen=True)
class Figures:
    """What the overview shows."""

    calls_per_second: float
    allowed: int
    denied: int
    pending_approvals: int
    active_revocations: int
    unjudged_events: int
    scoring_failures: int
    detector_mode: str
    pool_ready: int
    pool_size: int
    bars: list[Bar]


def figures(gateway: Gateway) -> Figures:
    """The figures now: decisions of the last minute and hour, and the gateway's own counters."""
    now = utcnow()
    recent = audit_stats(gateway.database, AuditFilter(since=now - timedelta(seconds=60)), "minute", "decision")
    hour = audit_stats(gateway.database, AuditFilter(since=now - timedelta(minutes=WINDOW_MINUTES)), "minute",
                       "decision")
    per_minute: dict[str, dict[str, int]] = {}
    for count in hour:
        per_minute.setdefault(count.start.strftime("%H:%M"), {})[count.key or "deny"] = count.count
    minutes = [(now - timedelta(minutes=back)).strftime("%H:%M") for back in range(WINDOW_MINUTES - 1, -1, -1)]
    bars = [Bar(label, per_minute.get(label, {}).get("allow", 0), per_minute.get(label, {}).get("deny", 0))
            for label in minutes]
    ready, size = gateway.sandbox.pool
    return Figures(
        calls_per_second=sum(c.count for c in recent) / 60, allowed=sum(c.count for c in hour if c.key == "allow"),
        denied=sum(c.count for c in hour if c.key != "allow"),
        pending_approvals=len(gateway.approvals.list("pending", None, 1000)),
        active_revocations=len(gateway.revocations.list(True, None)), unjudged_events=gateway.worker.unjudged,
        scoring_failures=gateway.worker.failures, detector_mode=gateway.detector_controls.global_mode,
        pool_ready=ready, pool_size=size, bars=bars)


@router.get("", response_class=HTMLResponse, include_in_schema=False)
async def overview(request: Request, operator: ConsoleOperator) -> HTMLResponse:
    """The overview page; its figures refresh themselves."""
    return render(request, "overview.html", operator, page="overview", **await _context(request))


@router.get("/fragments/overview", response_class=HTMLResponse, include_in_schema=False)
async def overview_figures(request: Request, operator: ConsoleOperator) -> HTMLResponse:
    """The figures alone, for the page's live refresh."""
    return render(request, "overview_figures.html", operator, **await _context(request))


async def _context(request: Request) -> dict[str, object]:
    current = await asyncio.to_thread(figures, gateway_of(request))
    chart = decision_bars(current.bars, f"Decisions per minute over the last {WINDOW_MINUTES} minutes")
    return {"figures": current, "chart": chart}
