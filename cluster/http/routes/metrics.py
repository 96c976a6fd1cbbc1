"""``/metrics``: this process's Prometheus metrics, for an operator's scraper (admin).

Behind a bearer token with the ``admin`` scope, as every route but health is: the metrics
tell how busy the farm is and why assets fail, across all owners, which is the operator's
business, not a client's. Prometheus sends the token itself (``authorization`` with a
``credentials_file`` in its scrape config, see docs/deployment.md), so no second, open
port is needed on the endpoint. Workers' metrics are on their own Dask dashboard ports.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from cluster import metrics
from cluster.http.dependencies import Admin
from cluster.http.models import AUTH_ERRORS

router = APIRouter(tags=["metrics"], responses=AUTH_ERRORS)


@router.get("/metrics", response_class=Response, operation_id="metrics",
            summary="Prometheus metrics of the endpoint's process (admin)",
            responses={200: {"description": "the metrics, in the Prometheus text format",
                             "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def get_metrics(principal: Admin) -> Response:
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
