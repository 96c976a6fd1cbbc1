"""The OpenAPI document, as FastAPI generates it from the routes and models, completed with
what only this server knows: the content types it accepts and its upload limit.

Bodies the routes stream themselves are declared with ``models.request_body``; their models
are added to the components here. FastAPI's default 422 (its own validation-error shape) is
dropped where a route does not say otherwise: this endpoint answers 422 as ``Error``, and only
where a route documents it.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from cluster.http.models import RAW_BODIES, REQUEST_MODELS
from cluster.http.service import ApiConfig

TITLE = "Mediafarm"
DESCRIPTION = ("Submit media to the farm and follow each asset to ready, rejected or failed. "
               'Every error is JSON: {"error": code, "message": sentence}.')
_FASTAPI_422 = "#/components/schemas/HTTPValidationError"


def document(app: FastAPI, config: ApiConfig) -> dict:
    """The document for ``app`` running with ``config``."""
    doc = get_openapi(title=TITLE, version="1", description=DESCRIPTION, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    _, defs = models_json_schema([(model, "validation") for model in REQUEST_MODELS],
                                 ref_template="#/components/schemas/{model}")
    schemas.update(defs.get("$defs", {}))
    schemas.update(RAW_BODIES)
    for item in doc["paths"].values():
        for operation in item.values():
            responses = operation.get("responses", {})
            answer = responses.get("422", {}).get("content", {}).get("application/json", {})
            if answer.get("schema", {}).get("$ref") == _FASTAPI_422:
                del responses["422"]
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    _advertise(doc, config)
    return doc


def _advertise(doc: dict, config: ApiConfig) -> None:
    types = sorted(config.content_types)
    schemas = doc["components"]["schemas"]
    upload = schemas["UploadRequest"]["properties"]
    _narrow(upload["content_type"], {"enum": types})
    _narrow(upload["size"], {"maximum": config.max_upload_bytes})
    form = doc["paths"]["/v1/assets"]["post"]["requestBody"]["content"]["multipart/form-data"]
    form["encoding"] = {"file": {"contentType": ", ".join(types)}}


def _narrow(schema: dict, extra: dict) -> None:
    """Add ``extra`` to the non-null branch of an optional field's schema."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") != "null":
            branch.update(extra)
