"""The HTTP submit endpoint: a FastAPI app over one Farm (``mediafarm serve``).

This module only assembles: the lifespan holding the Farm, the error handlers, the
middleware and one router per resource (``cluster.http.routes``). The OpenAPI document is
generated from the routes and models (``/openapi.json``, browsable at ``/docs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from functools import partial

from anyio import to_thread
from fastapi import FastAPI
from starlette.middleware import Middleware

from cluster.farm import Farm
from cluster.http import errors
from cluster.http.document import DESCRIPTION, TITLE, document
from cluster.http.routes import (assets, collections, health, jobs, metrics, owners, renditions,
                                 search, tags, tus, uploads, webhooks)
from cluster.http.service import ApiConfig, FarmService
from cluster.http.slow_clients import BodyIdleTimeout
from cluster.http.upload_cleanup import clean_uploads
from cluster.http.webhooks import client as webhook_client
from cluster.http.webhooks import deliver_round
from pipelines.recipe import Recipe

log = logging.getLogger(__name__)

ROUTERS = (assets.router, renditions.router, uploads.router, tus.router, jobs.router,
           tags.router, collections.router, search.router, owners.router, webhooks.router,
           metrics.router, health.router)


def create_app(farm_factory: Callable[[], Farm], config: ApiConfig,
               recipe: Recipe | None = None) -> FastAPI:
    """The ASGI app; ``farm_factory`` makes the one Farm the server holds while it runs."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        farm = await to_thread.run_sync(farm_factory)  # Dask's sync client wants its own thread
        app.state.service = FarmService(farm, config, recipe)
        loops = [asyncio.create_task(run(app.state.service)) for run, interval in (
            (_clean_periodically, config.upload_cleanup_s),
            (_deliver_periodically, config.webhook_interval_s)) if interval > 0]
        try:
            yield
        finally:
            for loop in loops:
                loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop
            await to_thread.run_sync(app.state.service.close)

    app = FastAPI(title=TITLE, version="1", description=DESCRIPTION, lifespan=lifespan,
                  openapi_url="/openapi.json", docs_url="/docs", redoc_url=None,
                  middleware=[Middleware(tus.TusResumableHeader),
                              Middleware(BodyIdleTimeout, seconds=config.body_timeout_s)])
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.state.config = config
    made = document(app, config)
    app.openapi = lambda: made  # generated once, with this server's limits
    return app


async def _clean_periodically(service: FarmService) -> None:
    """Drop expired resumable and abandoned multipart uploads, and staging objects lost
    workers left, now and every interval."""
    config = service.config
    while True:
        try:
            await to_thread.run_sync(partial(clean_uploads, service.engine, service.stores["buffer"],
                                             config.upload_expires_s,
                                             originals=service.stores["originals"]))
        except Exception:  # noqa: BLE001 - the next round tries again; the server carries on
            log.exception("upload clean-up failed")
        await asyncio.sleep(config.upload_cleanup_s)


async def _deliver_periodically(service: FarmService) -> None:
    """Send the completion webhooks that are due (the catalog's delivery log), every interval."""
    config = service.config
    with webhook_client(config.webhook_timeout_s) as http:
        send = partial(deliver_round, service.engine, http,
                       allowed_hosts=config.webhook_allowed_hosts,
                       max_attempts=config.webhook_max_attempts,
                       retry_base_s=config.webhook_retry_s,
                       lease_s=max(60.0, 4 * config.webhook_timeout_s))
        while True:
            try:
                await to_thread.run_sync(send)
            except Exception:  # noqa: BLE001 - the next round tries again; the server carries on
                log.exception("webhook delivery failed")
            await asyncio.sleep(config.webhook_interval_s)
