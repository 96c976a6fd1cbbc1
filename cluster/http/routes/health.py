"""``/healthz`` and ``/readyz``: the process is up; its catalog, scheduler and clamd answer."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter
from starlette.responses import JSONResponse

from cluster.http.dependencies import Service
from cluster.http.models import Health, Ready

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, operation_id="health",
            summary="The process is up", response_description="up")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Ready, operation_id="ready",
            summary="Catalog, scheduler and clamd answer", response_description="ready",
            responses={503: {"model": Ready, "description": "a dependency does not answer"}})
async def readyz(service: Service) -> Ready | JSONResponse:
    checks = await to_thread.run_sync(service.readiness)
    if all(v == "ok" for v in checks.values()):
        return Ready(status="ready", checks=checks)
    return JSONResponse(Ready(status="unready", checks=checks).model_dump(), 503)
