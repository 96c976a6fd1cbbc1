"""The HTTP submit endpoint: a FastAPI app over one Farm (``mediafarm serve``).

This module only assembles: the lifespan holding the Farm, the error handlers, the
middleware and one router per resource (``cluster.http.routes``). The OpenAPI document is
generated from the routes and models (``/openapi.json``, browsable at ``/docs``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI
from starlette.middleware import Middleware

from cluster.farm import Farm
from cluster.http import errors
from cluster.http.document import DESCRIPTION, TITLE, document
from cluster.http.routes import assets, health, jobs, renditions, uploads
from cluster.http.service import ApiConfig, FarmService
from cluster.http.slow_clients import BodyIdleTimeout
from pipelines.recipe import Recipe

ROUTERS = (assets.router, renditions.router, uploads.router, jobs.router, health.router)


def create_app(farm_factory: Callable[[], Farm], config: ApiConfig,
               recipe: Recipe | None = None) -> FastAPI:
    """The ASGI app; ``farm_factory`` makes the one Farm the server holds while it runs."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        farm = await to_thread.run_sync(farm_factory)  # Dask's sync client wants its own thread
        app.state.service = FarmService(farm, config, recipe)
        try:
            yield
        finally:
            await to_thread.run_sync(app.state.service.close)

    app = FastAPI(title=TITLE, version="1", description=DESCRIPTION, lifespan=lifespan,
                  openapi_url="/openapi.json", docs_url="/docs", redoc_url=None,
                  middleware=[Middleware(BodyIdleTimeout, seconds=config.body_timeout_s)])
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.state.config = config
    made = document(app, config)
    app.openapi = lambda: made  # generated once, with this server's limits
    return app
