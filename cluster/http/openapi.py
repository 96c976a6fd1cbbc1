"""The HTTP endpoint's OpenAPI 3 document, written out rather than inferred, so it is exact."""

from __future__ import annotations

from cluster.http.service import ApiConfig

STATUSES = ["queued", "processing", "ready", "rejected", "failed"]


def _nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


def _error(description: str, headers: dict | None = None) -> dict:
    response = {"description": description,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    if headers:
        response["headers"] = headers
    return response


def _json(description: str, schema: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                                "schema": {"type": "integer", "minimum": 1}}}
_WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "the Bearer challenge",
                                          "schema": {"type": "string"}}}

# Every authenticated operation can answer these.
_AUTH_ERRORS = {
    "401": _error("no token, or an unknown or revoked one", _WWW_AUTHENTICATE),
    "403": _error("the token lacks the scope this operation needs"),
    "429": _error("this token's rate limit, or this address's budget of failed "
                  "authentications, is spent", _RETRY_AFTER),
}

# Operations that read a body can time out waiting for it.
_BODY_TIMEOUT = _error("the request body stopped arriving (MEDIAFARM_API_BODY_TIMEOUT)")

_ASSET_ID = {"name": "asset_id", "in": "path", "required": True,
             "schema": {"type": "string", "format": "uuid"}}


def document(config: ApiConfig) -> dict:
    """The document for an endpoint running with ``config`` (its limits appear in it)."""
    types = sorted(config.content_types)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Mediafarm",
            "version": "1",
            "description": "Submit media to the farm and follow each asset to ready, rejected "
                           "or failed. Every error is JSON: {\"error\": code, \"message\": sentence}.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(config),
        },
        "paths": {
            "/v1/assets": {"post": {
                "operationId": "createAsset",
                "summary": "Upload a file (multipart) or name an object in a store (JSON)",
                "security": [{"bearer": []}],
                "parameters": [{
                    "name": "Idempotency-Key", "in": "header", "required": False,
                    "description": "a retry with the same key and request gets the same answer",
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,200}$"}}],
                "requestBody": {"required": True, "content": {
                    "multipart/form-data": {
                        "schema": {"$ref": "#/components/schemas/Upload"},
                        "encoding": {"file": {"contentType": ", ".join(types)}}},
                    "application/json": {"schema": {"$ref": "#/components/schemas/SourceRequest"}},
                }},
                "responses": {
                    "202": _json("accepted: the asset is queued (or already done)", "Accepted"),
                    "400": _error("the body cannot be parsed"),
                    **_AUTH_ERRORS,
                    "408": _BODY_TIMEOUT,
                    "409": _error("the Idempotency-Key was used for a different request, or "
                                  "a request with it is still being answered (Retry-After)"),
                    "413": _error(f"the body is over {config.max_upload_bytes} bytes"),
                    "415": _error("the body, or its file part, is of a type not accepted"),
                    "422": _error("the form or the source_uri is not acceptable"),
                },
            }},
            "/v1/assets/{asset_id}": {
                "parameters": [_ASSET_ID],
                "get": {
                    "operationId": "getAsset",
                    "summary": "An asset's status, versions and renditions with their URLs",
                    "security": [{"bearer": []}],
                    "responses": {"200": _json("the asset", "Asset"), **_AUTH_ERRORS,
                                  "404": _error("no such asset for this owner")},
                },
                "delete": {
                    "operationId": "deleteAsset",
                    "summary": "Unpublish an asset's renditions; its status and history stay",
                    "security": [{"bearer": []}],
                    "responses": {"204": {"description": "deleted (or already deleted)"},
                                  **_AUTH_ERRORS, "404": _error("no such asset for this owner")},
                },
            },
            "/v1/renditions/{sha256}": {"get": {
                "operationId": "getRendition",
                "summary": "A rendition's bytes, for renditions kept in a local store",
                "security": [{"bearer": []}],
                "parameters": [{"name": "sha256", "in": "path", "required": True,
                                "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}],
                "responses": {
                    "200": {"description": "the rendition's bytes",
                            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
                    **_AUTH_ERRORS,
                    "404": _error("no published rendition of this owner has this digest"),
                },
            }},
            "/v1/uploads": {"post": {
                "operationId": "createUpload",
                "summary": "A presigned PUT URL into the buffer store (S3 and R2 only)",
                "security": [{"bearer": []}],
                "requestBody": {"required": False, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/UploadRequest"}}}},
                "responses": {
                    "201": _json("upload here, then call complete_url", "UploadCreated"),
                    "400": _error("the body cannot be parsed"),
                    **_AUTH_ERRORS,
                    "408": _BODY_TIMEOUT,
                    "409": _error("the buffer store cannot presign (a local folder)"),
                    "413": _error("the announced size is over the limit"),
                    "415": _error("the announced content type is not accepted"),
                    "422": _error("the body is not acceptable"),
                },
            }},
            "/v1/uploads/{upload_id}/complete": {"post": {
                "operationId": "completeUpload",
                "summary": "Submit an uploaded object to the farm",
                "security": [{"bearer": []}],
                "parameters": [{"name": "upload_id", "in": "path", "required": True,
                                "schema": {"type": "string", "format": "uuid"}}],
                "responses": {
                    "202": _json("accepted: the asset is queued", "Accepted"),
                    **_AUTH_ERRORS,
                    "404": _error("no such upload for this owner"),
                    "409": _error("nothing has been uploaded to the URL yet"),
                    "413": _error("the uploaded object is over the announced size or the "
                                  "limit; it was removed"),
                    "422": _error("the uploaded object is empty"),
                },
            }},
            "/v1/jobs": {"post": {
                "operationId": "createJob",
                "summary": "Start a backfill or re-encode in the background (admin)",
                "security": [{"bearer": []}],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}}}},
                "responses": {
                    "202": _json("started", "Accepted"),
                    "400": _error("the body cannot be parsed"),
                    **_AUTH_ERRORS,
                    "408": _BODY_TIMEOUT,
                    "413": _error("the body is too large"),
                    "415": _error("the body is not JSON"),
                    "422": _error("the job, its recipe, selection or manifest is not acceptable"),
                },
            }},
            "/v1/jobs/{job_id}": {"get": {
                "operationId": "getJob",
                "summary": "A job's progress, from the catalog (admin)",
                "security": [{"bearer": []}],
                "parameters": [{"name": "job_id", "in": "path", "required": True,
                                "schema": {"type": "string", "format": "uuid"}}],
                "responses": {"200": _json("the job", "Job"), **_AUTH_ERRORS,
                              "404": _error("no such job")},
            }},
            "/healthz": {"get": {
                "operationId": "health", "summary": "The process is up",
                "responses": {"200": _json("up", "Health")},
            }},
            "/readyz": {"get": {
                "operationId": "ready",
                "summary": "Catalog, scheduler and clamd answer",
                "responses": {"200": _json("ready", "Ready"),
                              "503": _json("a dependency does not answer", "Ready")},
            }},
            "/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3 document",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}},
            }},
        },
    }


def _schemas(config: ApiConfig) -> dict:
    string, date_time = {"type": "string"}, {"type": "string", "format": "date-time"}
    digest = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
    return {
        "Error": {"type": "object", "required": ["error", "message"],
                  "additionalProperties": False,
                  "properties": {"error": string, "message": string}},
        "Upload": {"type": "object", "required": ["file"], "additionalProperties": False,
                   "properties": {"file": {"type": "string", "format": "binary"}}},
        "SourceRequest": {"type": "object", "required": ["source_uri"],
                          "additionalProperties": False,
                          "properties": {"source_uri": {
                              "type": "string", "description": "an object the caller's owner "
                              "uploaded, or one under its ingest prefix"}}},
        "Accepted": {"type": "object", "required": ["id", "status_url"],
                     "additionalProperties": False,
                     "properties": {"id": {"type": "string", "format": "uuid"},
                                    "status_url": string}},
        "Asset": {"type": "object", "additionalProperties": False,
                  "required": ["id", "status", "reason", "message", "retryable", "sha256",
                               "version", "deleted_at", "created_at", "updated_at", "versions",
                               "renditions"],
                  "properties": {
                      "id": {"type": "string", "format": "uuid"},
                      "status": {"type": "string", "enum": STATUSES},
                      "reason": _nullable(string),
                      "message": _nullable(string),
                      "retryable": {"type": "boolean"},
                      "sha256": _nullable(digest),
                      "version": _nullable({"type": "integer"}),
                      "deleted_at": _nullable(date_time),
                      "created_at": date_time,
                      "updated_at": date_time,
                      "versions": {"type": "array", "items": {"$ref": "#/components/schemas/Version"}},
                      "renditions": {"type": "array",
                                     "items": {"$ref": "#/components/schemas/Rendition"}},
                  }},
        "Version": {"type": "object", "additionalProperties": False,
                    "required": ["version", "sha256", "recipe_id", "created_at"],
                    "properties": {"version": {"type": "integer"}, "sha256": digest,
                                   "recipe_id": string, "created_at": date_time}},
        "Rendition": {"type": "object", "additionalProperties": False,
                      "required": ["preset", "format", "media_type", "width", "height", "bytes",
                                   "quality", "sha256", "url", "url_expires_at"],
                      "properties": {
                          "preset": string, "format": string, "media_type": _nullable(string),
                          "width": _nullable({"type": "integer"}),
                          "height": _nullable({"type": "integer"}),
                          "bytes": {"type": "integer"}, "quality": _nullable({"type": "integer"}),
                          "sha256": digest, "url": string, "url_expires_at": _nullable(date_time),
                      }},
        "UploadRequest": {"type": "object", "additionalProperties": False,
                          "required": ["size"],
                          "properties": {
                              "content_type": {"type": "string",
                                               "enum": sorted(config.content_types)},
                              "size": {"type": "integer", "minimum": 1,
                                       "maximum": config.max_upload_bytes}}},
        "UploadCreated": {"type": "object", "additionalProperties": False,
                          "required": ["id", "upload_url", "method", "headers", "expires_at",
                                       "complete_url"],
                          "properties": {
                              "id": {"type": "string", "format": "uuid"}, "upload_url": string,
                              "method": {"type": "string", "enum": ["PUT"]},
                              "headers": {"type": "object", "additionalProperties": string},
                              "expires_at": date_time, "complete_url": string}},
        "JobRequest": {"type": "object", "required": ["kind"], "additionalProperties": False,
                       "properties": {
                           "kind": {"type": "string", "enum": ["reencode", "backfill"]},
                           "where": {"type": "string", "description": "reencode: e.g. owner=alice"},
                           "manifest": {"type": "string",
                                        "description": "backfill: catalog:… or a path in a store"},
                           "recipe": {"type": "object", "description": "a recipe, as in YAML"},
                           "owner": {"type": "string"}}},
        "Job": {"type": "object", "additionalProperties": False,
                "required": ["id", "kind", "recipe_id", "manifest", "status", "submitted",
                             "skipped", "counts", "assets", "created_at", "updated_at", "message"],
                "properties": {
                    "id": string, "kind": string, "recipe_id": string, "manifest": string,
                    "status": {"type": "string", "enum": ["running", "finished", "failed"]},
                    "submitted": {"type": "integer"}, "skipped": {"type": "integer"},
                    "counts": _nullable({"type": "object",
                                         "additionalProperties": {"type": "integer"}}),
                    "assets": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "created_at": date_time, "updated_at": date_time,
                    "message": _nullable(string)}},
        "Health": {"type": "object", "required": ["status"], "additionalProperties": False,
                   "properties": {"status": {"type": "string", "enum": ["ok"]}}},
        "Ready": {"type": "object", "required": ["status", "checks"], "additionalProperties": False,
                  "properties": {"status": {"type": "string", "enum": ["ready", "unready"]},
                                 "checks": {"type": "object", "additionalProperties": string}}},
    }
