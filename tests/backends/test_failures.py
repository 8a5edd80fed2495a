"""Which storage failures mean "out of space" (507), "unavailable, retry" (503) or "broken" (500)."""

from __future__ import annotations

import errno
import sqlite3

import psycopg
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout

from kvbox.backends.failures import storage_failure
from kvbox.core.errors import InsufficientStorageError, StorageError, StorageUnavailableError


def sqlite_full() -> sqlite3.Error:
    error = sqlite3.OperationalError("database or disk is full")
    error.sqlite_errorcode = 13
    return error


def s3_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


CASES: list[tuple[BaseException, type[StorageError]]] = [
    (OSError(errno.ENOSPC, "No space left on device"), InsufficientStorageError),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), InsufficientStorageError),
    (sqlite_full(), InsufficientStorageError),
    (pg_errors.DiskFull("could not extend file"), InsufficientStorageError),
    (s3_error("XMinioStorageFull", 507), InsufficientStorageError),
    (OSError(errno.ECONNREFUSED, "Connection refused"), StorageUnavailableError),
    (psycopg.OperationalError("server closed the connection unexpectedly"), StorageUnavailableError),
    (pg_errors.AdminShutdown("terminating connection"), StorageUnavailableError),
    (pg_errors.ReadOnlySqlTransaction("read-only"), StorageUnavailableError),
    (PoolTimeout("couldn't get a connection after 5.00 sec"), StorageUnavailableError),
    (s3_error("InternalError", 500), StorageUnavailableError),
    (s3_error("SlowDown", 503), StorageUnavailableError),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), StorageUnavailableError),
    (OSError(errno.EIO, "Input/output error"), StorageError),
    (sqlite3.DatabaseError("database disk image is malformed"), StorageError),
    (pg_errors.UndefinedTable("relation does not exist"), StorageError),
    (s3_error("AccessDenied", 403), StorageError),
    (ValueError("undecodable row"), StorageError),
]


@pytest.mark.parametrize(("cause", "kind"), CASES, ids=[f"{type(c).__name__}-{k.__name__}" for c, k in CASES])
def test_each_failure_gets_its_class(cause: BaseException, kind: type[StorageError]) -> None:
    failure = storage_failure("it failed", cause)
    assert type(failure) is kind
    assert failure.message == "it failed"
    assert (failure.status, failure.type) == {
        InsufficientStorageError: (507, "insufficient-storage"),
        StorageUnavailableError: (503, "service-unavailable"),
        StorageError: (500, "internal-server-error"),
    }[kind]
