"""The OpenAPI document is generated from the routes and models, and describes all of them."""

from __future__ import annotations

import asyncio

import httpx

from cluster.http.app import ROUTERS, create_app
from cluster.http.models import REQUEST_MODELS
from cluster.http.service import ApiConfig

APP = create_app(lambda: None, ApiConfig(max_upload_bytes=4096))  # not started: no Farm needed
DOCUMENT = APP.openapi()
OPERATIONS = [(path, method, operation) for path, item in DOCUMENT["paths"].items()
              for method, operation in item.items()]


def test_every_route_is_documented_and_every_documented_path_is_routed():
    # A path convertor ({file:path}) is documented as the plain parameter ({file}).
    routed = {(route.path.replace(":path}", "}"), method.lower()) for router in ROUTERS
              for route in router.routes for method in route.methods}
    assert routed == {(path, method) for path, method, _ in OPERATIONS}


# Reachable without a token too: a signed URL (HMAC, expiring, bound to its asset) is its own
# credential, so that players, <video> elements and caches can fetch renditions and their
# HLS/DASH segments, which cannot send an Authorization header.
SIGNED_URL_PATHS = {"/v1/renditions/{sha256}", "/v1/renditions/{sha256}/{file}"}


def test_every_operation_but_health_needs_a_bearer_token_with_a_scope():
    assert DOCUMENT["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "a token from `mediafarm token create`"}
    for path, _, operation in OPERATIONS:
        if path in ("/healthz", "/readyz"):
            assert "security" not in operation
        elif path in SIGNED_URL_PATHS:  # the token with a scope, or else the signed URL
            token, signed = operation["security"]
            assert list(token) == ["bearer"] and token["bearer"] == ["read"], path
            assert signed == {"signed_url": []}, path
            assert {"401", "403", "429"} <= set(operation["responses"]), path
        else:
            [requirement] = operation["security"]
            assert list(requirement) == ["bearer"] and requirement["bearer"], path
            assert {"401", "403", "429"} <= set(operation["responses"]), path
    assert DOCUMENT["components"]["securitySchemes"]["signed_url"]["in"] == "query"


def test_every_error_is_documented_with_the_one_error_shape():
    error = {"$ref": "#/components/schemas/Error"}
    for path, method, operation in OPERATIONS:
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")) and not (path == "/readyz" and status == "503"):
                assert response["content"]["application/json"]["schema"] == error, (path, status)
    assert "HTTPValidationError" not in DOCUMENT["components"]["schemas"]
    assert DOCUMENT["components"]["schemas"]["Error"]["required"] == ["error", "message"]


def test_streamed_bodies_are_declared_with_their_models():
    schemas = DOCUMENT["components"]["schemas"]
    assert {model.__name__ for model in REQUEST_MODELS} <= set(schemas)
    for _, _, operation in OPERATIONS:
        for content in operation.get("requestBody", {}).get("content", {}).values():
            assert content["schema"]["$ref"].removeprefix("#/components/schemas/") in schemas
    form = DOCUMENT["paths"]["/v1/assets"]["post"]["requestBody"]["content"]
    assert set(form) == {"multipart/form-data", "application/json"}
    assert schemas["FileUpload"]["properties"]["file"]["format"] == "binary"
    assert "image/jpeg" in form["multipart/form-data"]["encoding"]["file"]["contentType"]
    size = schemas["UploadRequest"]["properties"]["size"]["anyOf"][0]
    assert size["maximum"] == 4096 and size["minimum"] == 1  # this server's limit


def test_tus_and_multipart_uploads_are_documented_with_their_bodies_headers_and_errors():
    schemas = DOCUMENT["components"]["schemas"]
    assert schemas["TusChunk"] == {"type": "string", "format": "binary",
                                   "description": "bytes of a tus upload, from its Upload-Offset on"}
    tus, upload = DOCUMENT["paths"]["/v1/tus"], DOCUMENT["paths"]["/v1/tus/{upload_id}"]
    assert set(tus) == {"options", "post"} and set(upload) == {"head", "get", "patch", "delete"}
    chunk = {"application/offset+octet-stream": {"schema": {"$ref": "#/components/schemas/TusChunk"}}}
    assert upload["patch"]["requestBody"] == {"required": True, "content": chunk}
    assert tus["post"]["requestBody"] == {"required": False, "content": chunk}
    patch = upload["patch"]
    assert {"204", "404", "409", "412", "413", "415", "423", "460", "507"} <= set(patch["responses"])
    assert {"Tus-Resumable", "Upload-Offset", "Mediafarm-Asset"} <= set(
        patch["responses"]["204"]["headers"])
    assert {"Tus-Resumable", "Upload-Offset", "Upload-Checksum"} <= {
        p["name"] for p in patch["parameters"] if p["in"] == "header"}
    assert patch["responses"]["412"]["headers"]["Tus-Version"]
    assert set(tus["options"]["responses"]["204"]["headers"]) >= {
        "Tus-Version", "Tus-Extension", "Tus-Max-Size", "Tus-Checksum-Algorithm"}
    created = DOCUMENT["paths"]["/v1/uploads"]["post"]["responses"]["201"]
    assert {ref["$ref"].rsplit("/", 1)[-1] for ref in
            created["content"]["application/json"]["schema"]["anyOf"]} == {
        "UploadCreated", "MultipartUploadCreated"}
    assert schemas["UploadRequest"]["properties"]["multipart"]["type"] == "boolean"
    complete = DOCUMENT["paths"]["/v1/uploads/{upload_id}/complete"]["post"]
    assert complete["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/CompleteRequest")
    assert "/v1/uploads/{upload_id}/parts" in DOCUMENT["paths"]


def test_the_document_and_the_interactive_docs_are_served():
    async def get(method: str, path: str) -> httpx.Response:
        # No lifespan runs: the document and the docs need no Farm.
        transport = httpx.ASGITransport(APP)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path)

    assert asyncio.run(get("GET", "/openapi.json")).json() == DOCUMENT
    docs = asyncio.run(get("GET", "/docs"))
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert asyncio.run(get("GET", "/nothing")).json()["error"] == "not_found"
    assert asyncio.run(get("PUT", "/v1/assets")).json()["error"] == "method_not_allowed"
