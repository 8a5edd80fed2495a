"""The one error hierarchy. Each error carries its Apify error `type` slug and HTTP status.

Only `kvbox.api.errors` turns these into HTTP responses.
"""

from __future__ import annotations

from typing import Any, ClassVar


class KvboxError(Exception):
    """Root of every error kvbox reports to a caller."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "internal-server-error"
    default_message: ClassVar[str] = "An internal error occurred."

    def __init__(self, message: str | None = None, *, data: dict[str, Any] | None = None) -> None:
        self.message = message or self.default_message
        self.data = data
        super().__init__(self.message)


class InvalidInputError(KvboxError):
    status = 400
    type = "invalid-input"
    default_message = "Invalid input."


class InvalidParameterError(KvboxError):
    status = 400
    type = "invalid-parameter"
    default_message = "Invalid parameter."


class InvalidValueError(KvboxError):
    status = 400
    type = "invalid-value"
    default_message = "Invalid value provided."


class InvalidRequestError(KvboxError):
    status = 400
    type = "invalid-request"
    default_message = "Invalid request."


class InvalidRecordKeyError(KvboxError):
    status = 400
    type = "invalid-record-key"
    default_message = "Record key contains invalid character"


class InvalidStoreNameError(KvboxError):
    status = 400
    type = "invalid-value"
    default_message = "Invalid store name."


class NameNotUniqueError(KvboxError):
    status = 400
    type = "name-not-unique"
    default_message = "A store with this name already exists."


class InvalidBodyEncodingError(KvboxError):
    """The body claims an encoding (gzip, br, deflate) but is not valid data in it."""

    status = 400
    type = "invalid-request"
    default_message = "The request body could not be decoded."


class InvalidContentTypeError(KvboxError):
    status = 400
    type = "invalid-content-type-header"
    default_message = "The Content-Type header is not valid."


class InvalidCollectionError(KvboxError):
    status = 400
    type = "invalid-collection"
    default_message = "The collection does not exist in the store's schema."


class StoreSchemaInvalidError(KvboxError):
    status = 400
    type = "store-schema-invalid"
    default_message = "The key-value store schema is not valid."


class SchemaValidationError(KvboxError):
    status = 400
    type = "schema-validation-failed"
    default_message = "The record does not match the store's schema."


class TokenNotProvidedError(KvboxError):
    status = 401
    type = "token-not-provided"
    default_message = "Authentication token was not provided"


class InvalidTokenError(KvboxError):
    status = 401
    type = "invalid-token"
    default_message = "Authentication token is not valid."


class InsufficientPermissionsError(KvboxError):
    status = 403
    type = "insufficient-permissions"
    default_message = (
        "Insufficient permissions for the key-value store. Make sure you're passing a correct API token "
        "and that it has the required permissions."
    )


class StoreNotFoundError(KvboxError):
    status = 404
    type = "record-not-found"
    default_message = "Key-value store was not found"


class RecordNotFoundError(KvboxError):
    status = 404
    type = "record-not-found"
    default_message = "Record was not found"


class UserNotFoundError(KvboxError):
    status = 404
    type = "user-or-token-not-found"
    default_message = "User was not found"


class WebhookNotFoundError(KvboxError):
    status = 404
    type = "record-not-found"
    default_message = "Webhook was not found"


class ChangesExpiredError(KvboxError):
    """A change-feed cursor older than the oldest change kept: the consumer missed changes."""

    status = 410
    type = "changes-expired"
    default_message = (
        "Changes after this sequence are no longer kept (see KVBOX_CHANGES_RETENTION); "
        "read the store again and follow the feed from its latest sequence."
    )


class ChangesDisabledError(KvboxError):
    """The deployment runs with the change feed off (KVBOX_CHANGES=false)."""

    status = 404
    type = "changes-disabled"
    default_message = "The change feed and webhooks are turned off on this server (KVBOX_CHANGES=false)."


class PageNotFoundError(KvboxError):
    status = 404
    type = "page-not-found"
    default_message = "This API endpoint does not exist."


class MethodNotAllowedError(KvboxError):
    status = 405
    type = "method-not-allowed"
    default_message = "Method not allowed."

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.allowed = allowed
        super().__init__(
            "This API endpoint can only be accessed using the following HTTP methods: " + ", ".join(allowed)
        )


class TargetNotEmptyError(KvboxError):
    """A deployment copy was aimed at a deployment that already holds data."""

    status = 409
    type = "target-not-empty"
    default_message = "The target already has users: copy only into an empty deployment."


class UriTooLongError(KvboxError):
    status = 414
    type = "uri-too-long"
    default_message = "The request URI is too long."


class RequestTooLargeError(KvboxError):
    status = 413
    type = "request-too-large"
    default_message = "The request payload is too large."

    def __init__(self, limit: int, actual: int | None = None) -> None:
        actual_text = f"{actual} bytes" if actual is not None else f"more than {limit} bytes"
        super().__init__(f"The payload is too large (limit: {limit} bytes, actual length: {actual_text}).")


class PreconditionFailedError(KvboxError):
    """A conditional request (`If-Match`, `If-None-Match: *`) found the record in another state:
    nothing was changed."""

    status = 412
    type = "precondition-failed"
    default_message = "The record does not match the request's precondition."


class UnsupportedContentEncodingError(KvboxError):
    status = 415
    type = "unsupported-content-encoding"
    default_message = "Content-Encoding is not supported."

    def __init__(self, encoding: str) -> None:
        super().__init__(f'Content-Encoding "{encoding}" is not supported.')


class RangeNotSatisfiableError(KvboxError):
    """A `Range` that selects no byte of the record; `total` is the record's length in the
    bytes the range counts (the response says `Content-Range: bytes */TOTAL`)."""

    status = 416
    type = "range-not-satisfiable"
    default_message = "The requested range is not satisfiable."

    def __init__(self, total: int) -> None:
        self.total = total
        super().__init__(f"The requested range selects no byte of the record, which is {total} bytes long.")


class RateLimitExceededError(KvboxError):
    status = 429
    type = "rate-limit-exceeded"
    default_message = "Rate limit exceeded."

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"You have exceeded the rate limit of {limit} requests per second")


class StorageError(KvboxError):
    """Persisted data is unreadable or inconsistent. Raised with the cause chained."""

    status = 500
    type = "internal-server-error"
    default_message = "The storage backend failed."


class InsufficientStorageError(StorageError):
    """The storage refused a write for lack of space (a full disk, a quota). Nothing was
    written; reads go on, and writes succeed again once space is freed."""

    status = 507
    type = "insufficient-storage"
    default_message = "The server has no space left to store this; nothing was written. Try again later."


class ServiceUnavailableError(KvboxError):
    """The server cannot serve for now: its index or blob store does not answer (`/health/ready`)."""

    status = 503
    type = "service-unavailable"
    default_message = "The server is not ready."


class StorageUnavailableError(StorageError, ServiceUnavailableError):
    """A storage service (the database, the object store) is down or refusing requests.
    The answer carries `Retry-After`; the server reconnects by itself."""

    status = 503
    type = "service-unavailable"
    default_message = "The storage service is unavailable; nothing was written. Try again later."
    retry_after: ClassVar[int] = 5
