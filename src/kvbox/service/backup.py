"""Backing up and restoring the embedded backend while it serves (`kvbox backup`, `kvbox restore`).

The scale-out backend is backed up by its own services (PostgreSQL point-in-time recovery,
bucket versioning; see docs/deployment.md), and checked with `kvbox verify` like any other.
"""

from __future__ import annotations

from pathlib import Path

from kvbox import __version__
from kvbox.backends.registry import BackupReport, Progress, backend_kind, backup_data_dir, restore_data_dir
from kvbox.service.settings import Settings

NOT_EMBEDDED = (
    "kvbox backup copies the embedded backend (a data directory). Back up PostgreSQL + S3 with their own tools: "
    "point-in-time recovery and bucket versioning (docs/deployment.md)."
)


def backup_deployment(settings: Settings, dest: Path, *, progress: Progress | None = None) -> BackupReport:
    """Back up the data directory the settings name into `dest` (missing or empty). ValueError
    for settings that name another backend."""
    kind = backend_kind(settings.backend, metadata_url=settings.metadata_url, blob_url=settings.blob_url)
    if kind != "sqlite":
        raise ValueError(NOT_EMBEDDED)
    return backup_data_dir(settings.data_dir, dest, created_by=f"kvbox {__version__}", progress=progress)


def restore_deployment(source: Path, data_dir: Path) -> BackupReport:
    """Restore the backup in `source` as the data directory `data_dir` (missing or empty)."""
    return restore_data_dir(source, data_dir)
