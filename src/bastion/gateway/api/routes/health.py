"""Liveness and readiness."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from bastion.gateway.api.deps import GatewayDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(gateway: GatewayDep) -> JSONResponse:
    """Ready only when the policy engine, the database and the Docker engine answer, the detector judges every event
    and (cluster mode) the bus is fresh; also shows which policy engine decides (opa, regocpp or remote), the warm
    pool and the detector's scoring failures."""
    readiness = await gateway.readiness()
    checks = {"policy": readiness.policy, "database": readiness.database, "sandbox": readiness.sandbox,
              "detector": readiness.detector}
    if gateway.settings.cluster:
        checks["bus"] = readiness.bus
    ready, size = gateway.sandbox.pool
    worker = gateway.worker
    detector = {"scoring_failures": worker.failures, "unjudged_events": worker.unjudged,
                "last_scoring_error": worker.last_error}
    return JSONResponse({"ready": readiness.ready, "checks": checks, "policy_engine": gateway.settings.policy_engine,
                         "warm_pool": {"ready": ready, "size": size},
                         "detector": detector}, status_code=200 if readiness.ready else 503)
