"""Google-shaped errors: `{"error": {"code": HTTP status, "message": ..., "status": CANONICAL_NAME}}`.

Handlers raise ApiError; the server turns it into that body. Operation errors use the
google.rpc.Code numbers instead (1 CANCELLED, 9 FAILED_PRECONDITION, ...), as the API does.
"""

from __future__ import annotations

from typing import Any

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# google.rpc.Code values used in operation errors.
RPC_CANCELLED = 1
RPC_INVALID_ARGUMENT = 3
RPC_NOT_FOUND = 5
RPC_FAILED_PRECONDITION = 9
RPC_INTERNAL = 13
RPC_UNIMPLEMENTED = 12


class ApiError(Exception):
    def __init__(self, code: int, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_NAMES.get(code, "UNKNOWN")

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found.")


def invalid(message: str) -> ApiError:
    return ApiError(400, message)
