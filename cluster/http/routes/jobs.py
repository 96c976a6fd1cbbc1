"""``/v1/jobs``: start a backfill or re-encode in the background, and follow it (admin)."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, Request

from catalog.webhooks import add_delivery
from cluster.http import upload_store
from cluster.http.dependencies import Admin, JobId, Service, json_model
from cluster.http.errors import ApiError
from cluster.http.models import (AUTH_ERRORS, BODY_TIMEOUT, Accepted, Job, JobRequest, errors,
                                 request_body)
from cluster.http.request_checks import api_url, utc
from cluster.http.webhooks import allowed_callback
from cluster.manifest import catalog_filter
from pipelines.recipe import Recipe, recipe_from_dict

router = APIRouter(tags=["jobs"], responses=AUTH_ERRORS)


@router.post("/v1/jobs", status_code=202, response_model=Accepted, operation_id="createJob",
             summary="Start a backfill or re-encode in the background (admin)",
             response_description="started",
             openapi_extra=request_body(JobRequest),
             responses=errors({
                 400: "the body cannot be parsed",
                 408: BODY_TIMEOUT,
                 413: "the body is too large",
                 415: "the body is not JSON",
                 422: "the job, its recipe, selection, manifest or callback_url is not "
                      "acceptable",
             }))
async def create_job(request: Request, principal: Admin, service: Service,
                     job: Annotated[JobRequest, Depends(json_model(JobRequest))]) -> Accepted:
    given = job.model_fields_set
    recipe = _recipe(job.recipe, required=job.kind == "reencode") or service.recipe
    owner = job.owner or principal.owner
    callback = job.callback_url and await to_thread.run_sync(
        allowed_callback, job.callback_url, service.config.webhook_allowed_hosts)
    if job.kind == "reencode":
        if "manifest" in given:
            raise ApiError(422, "invalid_body", "a reencode selects with 'where', not a manifest")
        _selection(job.where)
        job_id = await to_thread.run_sync(partial(service.start_job, job.kind, recipe,
                                                  where=job.where))
    else:
        if "where" in given:
            raise ApiError(422, "invalid_body", "a backfill reads a 'manifest', not 'where'")
        manifest = job.manifest
        if not manifest:
            raise ApiError(422, "invalid_body", "a backfill needs a manifest")
        if manifest.startswith("catalog:"):
            _selection(manifest)
        else:
            store, path = upload_store.store_object(manifest, service.stores,
                                                    service.config.source_stores, patterns=True)
            manifest = store.fs.unstrip_protocol(path)
        job_id = await to_thread.run_sync(partial(service.start_job, job.kind, recipe,
                                                  manifest=manifest, owner=owner))
    if callback:  # signed with the caller's secret: the admin asked for it
        await to_thread.run_sync(partial(add_delivery, service.engine, principal.owner, callback,
                                         job_id=job_id))
    return Accepted(id=job_id, status_url=api_url(request, "job", job_id=job_id))


def _recipe(value: dict | None, *, required: bool) -> Recipe | None:
    if value is None:
        if required:
            raise ApiError(422, "invalid_recipe", "a reencode needs a recipe")
        return None
    try:
        return recipe_from_dict(value)
    except Exception as exc:  # noqa: BLE001 - any malformed recipe is the client's mistake
        raise ApiError(422, "invalid_recipe", f"the recipe is not valid: {exc}") from exc


def _selection(where: str) -> None:
    if len(where) > 2000:
        raise ApiError(422, "invalid_selection", "a selection is text like owner=alice")
    try:
        catalog_filter(where)
    except ValueError as exc:
        raise ApiError(422, "invalid_selection", str(exc)) from exc


@router.get("/v1/jobs/{job_id}", name="job", response_model=Job, operation_id="getJob",
            summary="A job's progress, from the catalog (admin)", response_description="the job",
            responses=errors({404: "no such job"}))
async def get_job(_principal: Admin, service: Service, job_id: JobId) -> Job:
    job = await to_thread.run_sync(service.catalog.job_status, job_id)
    if job is None:
        raise ApiError(404, "not_found", "there is no such job")
    return Job(id=job["id"], kind=job["kind"], recipe_id=job["recipe_id"],
               manifest=job["manifest"], status=job["status"], submitted=job["submitted"],
               skipped=job["skipped"], counts=job["counts"], assets=job["assets"],
               created_at=utc(job["created_at"]), updated_at=utc(job["updated_at"]),
               message=service.job_error(job_id))
