"""`/admin/*`: operator actions behind a bearer token; the whole prefix is disabled (404)
when no token is configured, and never forwarded to the model server.

No route takes a file path, a URL or serialized objects from the client: the actions work
on what the sidecar was configured with.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import structlog
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, ValidationError

from app.api.auth import authorized
from app.config import Settings
from app.errors import AuthError, NotEnabled, RequestError
from app.upstream.breaker import CircuitBreaker

log = structlog.get_logger("infersight.admin")


class LogLevel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: Literal["debug", "info", "warning", "error"]


def admin_router(
    settings: Settings,
    run_drift_cycle: Callable[[], Awaitable[bool]],
    drift_status: Callable[[], dict[str, Any]],
    breaker: CircuitBreaker | None,
) -> APIRouter:
    """The `/admin` routes. Each checks the admin token before anything else (the body
    included): none configured → 404, a missing or wrong one → 401."""
    token = settings.auth.admin_token

    def guard(request: Request) -> None:
        if token is None:
            raise NotEnabled("/admin is disabled: set auth.admin_token to enable it")
        if not authorized(request, token):
            raise AuthError("a valid bearer token is required for /admin")

    router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(guard)])

    @router.get("/config")
    async def effective_config() -> dict[str, Any]:
        """The settings in force, secrets masked."""
        return settings.model_dump(mode="json")

    @router.post("/drift/run")
    async def drift_run() -> dict[str, Any]:
        """Run a drift cycle now (instead of waiting for the interval) and return the
        scheduler's state; the report is at `GET /monitoring/drift`."""
        if not settings.drift.enabled:
            raise NotEnabled("drift is off (drift.enabled)")
        ran = await run_drift_cycle()
        return {"ran": ran, **drift_status()}

    @router.post("/circuit/reset")
    async def circuit_reset() -> dict[str, Any]:
        """Close the circuit breaker now (for example after fixing the model server)."""
        if breaker is None:
            raise NotEnabled("the circuit breaker is off (upstream.breaker_failures is 0)")
        before = breaker.state.value
        breaker.succeeded()
        log.warning("admin.circuit_reset", before=before)
        return {"before": before, "state": breaker.state.value}

    @router.put(
        "/log-level",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": LogLevel.model_json_schema()}},
            }
        },
    )
    async def log_level(request: Request) -> dict[str, str]:
        """Change the application log level until the next restart: `{"level": "debug"}`."""
        try:
            body = LogLevel.model_validate_json(await request.body())
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "body"
            raise RequestError(f"'{where}': {err['msg']}") from None
        root = logging.getLogger()
        previous = logging.getLevelName(root.level).lower()
        root.setLevel(getattr(logging, body.level.upper()))
        log.warning("admin.log_level", new_level=body.level, previous=previous)
        return {"level": body.level, "previous": previous}

    @router.api_route(
        "/{rest:path}",
        methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
        include_in_schema=False,
    )
    async def unknown(rest: str) -> None:
        raise NotEnabled(f"no admin route /admin/{rest}")

    return router
