"""Online backup and restore of the embedded backend's data directory (`kvbox backup`, `kvbox restore`).

A backup is a directory holding the index (`kvbox.sqlite3`), the record files it refers to
(`blobs/`, same layout), the console's signing key and a manifest written last. It is taken
while servers run and writers keep writing:

1. A lock file in the blob directory, touched every few seconds while the backup runs, makes
   every server process defer blob deletions (see blobs.py). A short pause lets deletions
   decided just before the lock appeared finish.
2. SQLite's backup API copies the index in one step: one read transaction, hence one
   consistent snapshot, while writers go on (WAL mode). Rows of deleted stores awaiting
   their purge are dropped from the copy.
3. The record files the copy refers to are copied. Committed files never change (each write
   makes a new file), so each copy is exact. A file the snapshot refers to that is gone
   anyway was deleted before the lock took effect: the snapshot is taken again (the files
   already copied stay), at most `ATTEMPTS` times; one still missing then is missing from the
   data directory itself, and the report names it.

Everything is written into a temporary sibling of the destination and renamed into place, so
a backup that fails leaves nothing that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kvbox.backends.sqlite.blobs import BACKUP_LOCK, backup_running
from kvbox.backends.sqlite.schema import user_version
from kvbox.core.errors import StorageError

INDEX_FILE = "kvbox.sqlite3"  # as backends/registry.py lays out a data directory
BLOBS_DIR = "blobs"
EXTRA_FILES = ("console-secret",)
MANIFEST = "kvbox-backup.json"
FORMAT = 1
ATTEMPTS = 3
LOCK_GRACE_S = 0.5
LOCK_REFRESH_S = 5.0

Progress = Callable[[int, int], None]
"""Told (files copied, files to copy) as record files are copied."""


@dataclass
class BackupReport:
    """What a backup holds; `missing` names record files the data directory itself lacks."""

    path: str
    created_at: str
    created_by: str
    schema_version: int
    stores: int
    records: int
    files: int
    file_bytes: int
    attempts: int = 1
    missing: list[str] = field(default_factory=list)
    format: int = FORMAT


def _blob_path(root: Path, blob_id: str) -> Path:
    return root / blob_id[:2] / blob_id[2:4] / blob_id


@contextlib.contextmanager
def _lock(blobs: Path) -> Iterator[None]:
    """Hold the backup lock (kept fresh by a thread) for the block."""
    lock = blobs / BACKUP_LOCK
    if backup_running(blobs):
        raise StorageError(f"Another backup of {blobs.parent} is running (lock {lock}).")
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    lock.write_text(json.dumps(owner))
    done = threading.Event()

    def refresh() -> None:
        while not done.wait(LOCK_REFRESH_S):
            with contextlib.suppress(OSError):
                os.utime(lock)

    thread = threading.Thread(target=refresh, name="kvbox-backup-lock", daemon=True)
    thread.start()
    try:
        time.sleep(LOCK_GRACE_S)
        yield
    finally:
        done.set()
        thread.join()
        lock.unlink(missing_ok=True)


def _snapshot(index: Path, target: Path) -> list[tuple[str, int]]:
    """Copy the index into `target` in one step; return the (blob id, size) of its live records."""
    target.unlink(missing_ok=True)
    source = sqlite3.connect(index, timeout=30)
    try:
        copy = sqlite3.connect(target, isolation_level=None)
        try:
            source.backup(copy, pages=-1)  # one step: one read transaction, one consistent snapshot
            copy.execute("DELETE FROM records WHERE store_pk IN (SELECT store_pk FROM deleted_stores)")
            copy.execute("DELETE FROM deleted_stores")
            copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            check = copy.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StorageError(f"The copied index fails SQLite's check: {check}")
            rows = copy.execute("SELECT blob_id, size FROM records WHERE blob_id IS NOT NULL").fetchall()
        finally:
            copy.close()
    except sqlite3.Error as e:
        raise StorageError(f"Could not copy the index {index}: {e}") from e
    finally:
        source.close()
    _fsync(target)
    return [(str(blob_id), int(size)) for blob_id, size in rows]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_file(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    _fsync(target)


def _copy_blobs(
    source: Path, target: Path, wanted: list[tuple[str, int]], progress: Progress | None
) -> tuple[list[str], int]:
    """Copy the wanted record files not copied yet; return the ids missing at the source and
    the bytes of every wanted file."""
    missing: list[str] = []
    total = 0
    for done, (blob_id, size) in enumerate(wanted, 1):
        copied = _blob_path(target, blob_id)
        if not copied.exists():
            try:
                _copy_file(_blob_path(source, blob_id), copied)
            except FileNotFoundError:
                missing.append(blob_id)
                continue
        total += size
        if progress is not None:
            progress(done, len(wanted))
    return missing, total


def _drop_unwanted(target: Path, wanted: set[str]) -> None:
    """Remove files copied by an earlier attempt that the final snapshot does not refer to."""
    for path in target.glob("*/*/*"):
        if path.name not in wanted:
            path.unlink()


def backup(data_dir: Path, dest: Path, *, created_by: str, progress: Progress | None = None) -> BackupReport:
    """Take a consistent backup of the data directory `data_dir` (servers may be running) into
    `dest`, which must not exist or be an empty directory."""
    index, blobs = data_dir / INDEX_FILE, data_dir / BLOBS_DIR
    if not index.is_file():
        raise StorageError(f"{data_dir} holds no kvbox index ({INDEX_FILE}).")
    _check_empty(dest)
    partial = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    (partial / BLOBS_DIR).mkdir(parents=True)
    try:
        blobs.mkdir(parents=True, exist_ok=True)
        with _lock(blobs):
            report = _copy_consistent(index, blobs, partial, created_by, progress)
        for name in EXTRA_FILES:
            if (data_dir / name).is_file():
                _copy_file(data_dir / name, partial / name)
        report.path = str(dest)
        (partial / MANIFEST).write_text(json.dumps(asdict(report), indent=2) + "\n")
        _fsync(partial / MANIFEST)
        if dest.exists():
            dest.rmdir()
        partial.rename(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return report


def _copy_consistent(
    index: Path, blobs: Path, partial: Path, created_by: str, progress: Progress | None
) -> BackupReport:
    for attempt in range(1, ATTEMPTS + 1):
        wanted = _snapshot(index, partial / INDEX_FILE)
        missing, total = _copy_blobs(blobs, partial / BLOBS_DIR, wanted, progress)
        if not missing or attempt == ATTEMPTS:
            break
    _drop_unwanted(partial / BLOBS_DIR, {blob_id for blob_id, _ in wanted})
    with contextlib.closing(sqlite3.connect(partial / INDEX_FILE)) as conn:
        stores, records = conn.execute("SELECT count(*), coalesce(sum(record_count), 0) FROM stores").fetchone()
        version = user_version(conn)
    return BackupReport(
        path="",
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        created_by=created_by,
        schema_version=version,
        stores=stores,
        records=records,
        files=len(wanted) - len(missing),
        file_bytes=total,
        attempts=attempt,
        missing=missing,
    )


def _check_empty(directory: Path) -> None:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise StorageError(f"{directory} exists and is not an empty directory.")


def read_manifest(backup_dir: Path) -> BackupReport:
    """The manifest of a complete backup; `StorageError` for anything else."""
    try:
        data = json.loads((backup_dir / MANIFEST).read_text())
        report = BackupReport(**data)
    except (OSError, ValueError, TypeError) as e:
        raise StorageError(f"{backup_dir} is not a complete kvbox backup (no readable {MANIFEST}).") from e
    if report.format != FORMAT:
        raise StorageError(f"{backup_dir} is a backup of format {report.format}; this kvbox reads format {FORMAT}.")
    return report


def restore(source: Path, data_dir: Path) -> BackupReport:
    """Make `data_dir` (missing or empty) a copy of the backup in `source`."""
    report = read_manifest(source)
    _check_empty(data_dir)
    partial = data_dir.parent / f".{data_dir.name}.restoring-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(source / BLOBS_DIR, partial / BLOBS_DIR, copy_function=shutil.copyfile)
        for name in (INDEX_FILE, *EXTRA_FILES):
            if (source / name).is_file():
                _copy_file(source / name, partial / name)
        if data_dir.exists():
            data_dir.rmdir()
        partial.rename(data_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return report
