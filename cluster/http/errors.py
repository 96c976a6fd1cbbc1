"""The one error shape of the HTTP endpoint: ``{"error": code, "message": sentence}``."""

from __future__ import annotations


class ApiError(Exception):
    """A client-facing failure: an HTTP status, a machine-readable code and a sentence."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": self.code, "message": self.message}
