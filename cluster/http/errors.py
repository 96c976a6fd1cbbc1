"""The one error shape of the HTTP endpoint: ``{"error": code, "message": sentence}``, and the
handlers that give every failure that shape: the endpoint's own, FastAPI's validation, the
router's 404 and 405, a client gone mid-body, and anything unforeseen (500, logged).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A client-facing failure: an HTTP status, a machine-readable code and a sentence."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": self.code, "message": self.message}


# Parameters FastAPI checks whose refusal has a code of its own (the rest are invalid_request).
_PARAMETER_ERRORS = {
    ("header", "Idempotency-Key"): ApiError(
        422, "invalid_idempotency_key", "Idempotency-Key is 1 to 200 letters, digits or . _ : -"),
}


def install(app: FastAPI) -> None:
    """Give every failure of ``app`` the endpoint's error shape."""
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(ClientDisconnect, gone)
    app.add_exception_handler(Exception, internal_error)


async def api_error(_request: Request, exc: ApiError) -> Response:
    return JSONResponse(exc.body(), exc.status, headers=exc.headers)


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
    problem = exc.errors()[0]
    where = tuple(str(part) for part in problem.get("loc", ())[:2])
    known = _PARAMETER_ERRORS.get(where)
    if known is None:
        known = ApiError(422, "invalid_request", f"{' '.join(where)}: {problem.get('msg')}")
    return await api_error(request, known)


async def http_error(_request: Request, exc: HTTPException) -> Response:
    codes = {404: ("not_found", "there is nothing at this path"),
             405: ("method_not_allowed", "this path does not take that method")}
    code, message = codes.get(exc.status_code, ("http_error", str(exc.detail)))
    return JSONResponse({"error": code, "message": message}, exc.status_code,
                        headers=getattr(exc, "headers", None))


async def gone(_request: Request, _exc: ClientDisconnect) -> Response:
    # The client hung up mid-body; nobody will read this answer, and it is not a server fault.
    return Response(status_code=400)


async def internal_error(_request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse({"error": "internal_error",
                         "message": "the server failed to answer; try again later"}, 500)
