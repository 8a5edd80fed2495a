"""Typed errors raised by the kvbox client.

An `ApiError` subclass is chosen by HTTP status, as the official Apify client does; the
Apify error `type` slug and message come from the `{"error": {...}}` envelope.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import httpx


class KvboxClientError(Exception):
    """Root of every error the client raises."""


class ApiError(KvboxClientError):
    """The server answered with an error status (after any retries).

    `status` is the HTTP status, `type` the Apify error slug (None when the body was not an
    error envelope), `message` the server's text, `data` the envelope's optional `data`.
    """

    status_class: ClassVar[int | None] = None

    def __init__(
        self,
        message: str,
        *,
        status: int,
        type: str | None = None,
        data: dict[str, Any] | None = None,
        method: str = "",
        url: str = "",
        attempt: int = 1,
    ) -> None:
        super().__init__(f"{status} {type or 'error'}: {message}")
        self.message = message
        self.status = status
        self.type = type
        self.data = data
        self.method = method
        self.url = url
        self.attempt = attempt


class InvalidRequestError(ApiError):
    status_class = 400


class UnauthorizedError(ApiError):
    status_class = 401


class ForbiddenError(ApiError):
    status_class = 403


class NotFoundError(ApiError):
    status_class = 404


class ConflictError(ApiError):
    status_class = 409


class PreconditionFailedError(ApiError):
    """A conditional write (`if_match`, `if_none_match`) or read found the record in another
    state; nothing was changed."""

    status_class = 412


class PayloadTooLargeError(ApiError):
    status_class = 413


class UnsupportedContentEncodingError(ApiError):
    status_class = 415


class RangeNotSatisfiableError(ApiError):
    """A range that starts at or past the end of the record."""

    status_class = 416


class RateLimitError(ApiError):
    status_class = 429


class ServerError(ApiError):
    """Any 5xx status."""


class TransportError(KvboxClientError):
    """The server could not be reached or the connection broke (after any retries)."""

    def __init__(self, message: str, *, method: str, url: str, attempt: int) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.attempt = attempt


class InvalidResponseBodyError(KvboxClientError):
    """A response body does not match its declared content type (e.g. invalid JSON)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status_class: cls
    for cls in (
        InvalidRequestError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        ConflictError,
        PreconditionFailedError,
        PayloadTooLargeError,
        UnsupportedContentEncodingError,
        RangeNotSatisfiableError,
        RateLimitError,
    )
    if cls.status_class is not None
}


def api_error(response: httpx.Response, *, attempt: int) -> ApiError:
    """Build the typed error for a read (non-streaming or already read) error response."""
    status = response.status_code
    error_type: str | None = None
    data: dict[str, Any] | None = None
    try:
        payload = json.loads(response.content)
        error = payload["error"]
        message = str(error.get("message") or "")
        error_type = error.get("type")
        data = error.get("data")
    except (ValueError, KeyError, TypeError, AttributeError):
        # Not an Apify envelope (a proxy's HTML page, an empty HEAD body): keep what there is.
        text = response.text.strip() if response.content else ""
        message = f"Unexpected error: {text[:500]}" if text else response.reason_phrase or "Unknown error"
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    request = response.request
    return cls(
        message,
        status=status,
        type=error_type,
        data=data,
        method=request.method,
        url=str(request.url),
        attempt=attempt,
    )
