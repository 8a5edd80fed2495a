"""What a failed storage call means for the caller: out of space, unavailable, or broken.

Backends wrap every driver and file-system failure in a `StorageError` with the cause
chained. This module picks the class: `InsufficientStorageError` (507) when the storage
refused a write for lack of space, `StorageUnavailableError` (503, retry later) when a
service is down or refusing connections, and plain `StorageError` (500) for the rest.
"""

from __future__ import annotations

import errno

from kvbox.core.errors import InsufficientStorageError, StorageError, StorageUnavailableError

_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_UNREACHABLE = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.EPIPE})
# SQLite's primary result codes (sqlite3.Error.sqlite_errorcode & 0xff).
_SQLITE_FULL = 13
# PostgreSQL SQLSTATE codes: class 53 is insufficient resources (53100 disk full); class
# 08 a broken connection; 57P01-57P03 a server shutting down or starting; 25006 a
# read-only transaction (a standby, or a primary put in read-only mode).
_PG_NO_SPACE = frozenset({"53100"})
_PG_UNAVAILABLE_CLASSES = ("08", "57P")
_PG_UNAVAILABLE = frozenset({"25006", "53300"})
# S3 error codes meaning "not now": throttling and server-side failures.
_S3_UNAVAILABLE = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "500", "502", "503", "504"}
)
_S3_NO_SPACE = frozenset({"XMinioStorageFull", "QuotaExceeded", "507"})
_CONNECTION_FAILURES = frozenset(
    {"PoolTimeout", "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
     "ConnectionError", "ServerDisconnectedError", "ClientConnectorError"}
)  # fmt: skip


def storage_failure(message: str, cause: BaseException) -> StorageError:
    """The `StorageError` (of the right class) to raise for `cause`; chain it with `from`."""
    return _kind(cause)(message)


def _kind(cause: BaseException) -> type[StorageError]:
    if isinstance(cause, StorageError):
        return type(cause)
    if isinstance(cause, OSError) and cause.errno is not None:
        if cause.errno in _NO_SPACE:
            return InsufficientStorageError
        if cause.errno in _UNREACHABLE:
            return StorageUnavailableError
    code = getattr(cause, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == _SQLITE_FULL:
        return InsufficientStorageError
    return _by_service_code(cause)


def _by_service_code(cause: BaseException) -> type[StorageError]:
    sqlstate = getattr(cause, "sqlstate", None)
    if isinstance(sqlstate, str):
        if sqlstate in _PG_NO_SPACE:
            return InsufficientStorageError
        if sqlstate in _PG_UNAVAILABLE or sqlstate.startswith(_PG_UNAVAILABLE_CLASSES):
            return StorageUnavailableError
    s3_code = s3_error_code(cause)
    if s3_code in _S3_NO_SPACE:
        return InsufficientStorageError
    if s3_code in _S3_UNAVAILABLE:
        return StorageUnavailableError
    if _is_connection_failure(cause):
        return StorageUnavailableError
    return StorageError


def s3_error_code(error: BaseException) -> str:
    """The `Error.Code` of a botocore ClientError (its HTTP status when the body had none)."""
    response = getattr(error, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    if not code:
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(status) if status else ""
    return code


def _is_connection_failure(error: BaseException) -> bool:
    """A driver's "could not reach the server" exception, told by name so that no driver is
    imported here: psycopg's OperationalError without a SQLSTATE (the connection is gone),
    psycopg_pool's PoolTimeout, botocore's connection and timeout errors."""
    names = {cls.__name__ for cls in type(error).__mro__}
    if names & _CONNECTION_FAILURES:
        return True
    return "OperationalError" in names and getattr(error, "sqlstate", None) is None
