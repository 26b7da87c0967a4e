"""The FastAPI application: routes, problem handlers and the gateway's lifespan."""

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request, Response
from starlette.middleware.base import RequestResponseEndpoint

from gateway.problems import install_problem_handlers
from gateway.routes import agents, audit, health, revocations, sessions, tools
from gateway.service import Gateway
from gateway.settings import Settings

log = structlog.get_logger()

API_DESCRIPTION = """Every tool call an agent makes is authorized by Rego policy, run in a seccomp-locked
container, written to a hash-chained audit log before and after it runs, and judged by an anomaly
detector that can revoke the agent live. Authenticate with `Authorization: Bearer <key>`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the gateway starts (migrations, sandbox, detector) in the lifespan."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = Gateway(settings)
        await gateway.start()
        if gateway.generated_admin_key:
            print(f"\nbastion: generated admin key (shown once, store it now): {gateway.generated_admin_key}\n",
                  file=sys.stderr, flush=True)
        app.state.gateway = gateway
        log.info("gateway ready", database=settings.database_url.split("@")[-1], mode=settings.mode)
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(title="bastion", version="0.1.0", description=API_DESCRIPTION, lifespan=lifespan)
    install_problem_handlers(app)
    for module in (health, agents, sessions, tools, audit, revocations):
        app.include_router(module.router)

    @app.middleware("http")
    async def bind_request_context(request: Request, call_next: RequestResponseEndpoint) -> Response:
        structlog.contextvars.clear_contextvars()
        return await call_next(request)

    return app
