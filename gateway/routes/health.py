"""Liveness and readiness."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from gateway.deps import GatewayDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(gateway: GatewayDep) -> JSONResponse:
    """Ready only when the policy engine, the database and the Docker engine all answer; also shows the warm pool."""
    readiness = await gateway.readiness()
    checks = {"policy": readiness.policy, "database": readiness.database, "sandbox": readiness.sandbox}
    ready, size = gateway.sandbox.pool
    return JSONResponse({"ready": readiness.ready, "checks": checks, "warm_pool": {"ready": ready, "size": size}},
                        status_code=200 if readiness.ready else 503)
