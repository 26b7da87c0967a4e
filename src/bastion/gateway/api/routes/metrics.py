"""Prometheus metrics of this gateway."""

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from bastion.gateway.api.deps import GatewayDep

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
async def metrics(gateway: GatewayDep) -> Response:
    """Calls and decisions by outcome, per-stage latency histograms, audit queue depth, detector lag and batch
    sizes, warm-pool fill and revocations, for Prometheus to scrape (no authentication, like `/readyz`)."""
    return Response(gateway.metrics.render(), media_type=CONTENT_TYPE_LATEST)
