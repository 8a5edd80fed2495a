"""`kvbox users`, `kvbox tokens` and `kvbox sweep` run as real commands on a temp data directory.

Stores are made in-process through the services on the same directory (as a server would),
then the commands' effects are checked both in their output and through the services.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from kvbox.core.clock import FakeClock
from kvbox.core.errors import InvalidTokenError
from kvbox.core.models import GeneralAccess, Permission
from kvbox.server import create_app
from kvbox.service.container import Services, build_services
from kvbox.service.principal import Principal
from kvbox.service.settings import Settings

T = TypeVar("T")

KVBOX = Path(sys.executable).with_name("kvbox")
DAY_MS = 86_400_000
BIG = b"b" * (70 * 1024)  # over the default 64 KiB inline threshold: kept as a file


def kvbox(*args: str, data_dir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(KVBOX)] if KVBOX.exists() else [sys.executable, "-m", "kvbox.cli"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KVBOX_")}
    return subprocess.run(
        [*command, *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**clean, "COLUMNS": "200", **(env or {})},
    )


def ok(*args: str, data_dir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = kvbox(*args, data_dir=data_dir, env=env)
    assert proc.returncode == 0, f"kvbox {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def fails(*args: str, data_dir: Path, message: str, code: int = 1) -> subprocess.CompletedProcess[str]:
    proc = kvbox(*args, data_dir=data_dir)
    assert proc.returncode == code, f"kvbox {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1].strip()


def with_services(data_dir: Path, action: Callable[[Services], Awaitable[T]], *, clock: FakeClock | None = None) -> T:
    """Run one action on the data directory's services in this process, then close them."""

    async def go() -> T:
        services = build_services(Settings(data_dir=data_dir), clock=clock)
        try:
            return await action(services)
        finally:
            await services.close()

    return asyncio.run(go())


def create_store(data_dir: Path, owner: str, name: str | None, *, clock: FakeClock | None = None,
                 records: dict[str, bytes] | None = None, expires_at: int | None = None) -> str:  # fmt: skip
    async def action(s: Services) -> str:
        who = Principal(user=await s.users.find_user(owner))
        resolved, _ = await s.stores.get_or_create(who, name=name)
        for key, data in (records or {}).items():

            async def body(data: bytes = data) -> AsyncIterator[bytes]:
                yield data

            await s.records.put(who, resolved.store.id, key, body=body(), content_type="text/plain",
                                content_encoding=None, content_length=len(data), expires_at=expires_at)  # fmt: skip
        return resolved.store.id

    return with_services(data_dir, action, clock=clock)


def users_json(data_dir: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = json.loads(ok("users", "list", "--json", data_dir=data_dir).stdout)
    return rows


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def people(data_dir: Path) -> dict[str, str]:
    """Users alice and bob, created by the CLI; their tokens by name."""
    return {name: last_line(ok("users", "create", name, data_dir=data_dir).stdout) for name in ("alice", "bob")}


# --- users --------------------------------------------------------------------------------


def test_users_create_and_list(data_dir: Path) -> None:
    assert users_json(data_dir) == []
    created = ok("users", "create", "alice", data_dir=data_dir)
    token = last_line(created.stdout)
    assert len(token) >= 16
    assert "Created user alice" in created.stderr
    ok("users", "create", "bob", "--token", "bob-chosen-token-0123", data_dir=data_dir)

    rows = users_json(data_dir)
    assert [r["username"] for r in rows] == ["alice", "bob"]
    assert all(r["defaultGeneralAccess"] == "RESTRICTED" and len(r["id"]) == 17 for r in rows)
    assert rows[0]["id"] in created.stderr
    table = ok("users", "list", data_dir=data_dir).stdout
    assert "alice" in table and "bob" in table and rows[1]["id"] in table

    async def who(s: Services) -> list[str]:
        users = [(await s.auth.authenticate(t)).user for t in (token, "bob-chosen-token-0123")]
        return [user.username if user else "anonymous" for user in users]

    assert with_services(data_dir, who) == ["alice", "bob"]


def test_users_create_refuses_bad_input(data_dir: Path, people: dict[str, str]) -> None:
    fails("users", "create", "alice", data_dir=data_dir, message="already exists")
    fails("users", "create", "not a name!", data_dir=data_dir, message="username")
    fails("users", "create", "carol", "--token", "short", data_dir=data_dir, message="at least 16 characters")
    fails("users", "create", "carol", "--token", people["alice"], data_dir=data_dir, message="already in use")
    fails("users", "create", "carol", "--backend", "nosuch", data_dir=data_dir, message="unknown backend", code=2)
    assert [r["username"] for r in users_json(data_dir)] == ["alice", "bob"]


def test_users_set_access(data_dir: Path, people: dict[str, str]) -> None:
    out = ok("users", "set-access", "alice", "ANYONE_WITH_ID_CAN_READ", data_dir=data_dir).stdout
    assert "ANYONE_WITH_ID_CAN_READ" in out
    access = {r["username"]: r["defaultGeneralAccess"] for r in users_json(data_dir)}
    assert access == {"alice": "ANYONE_WITH_ID_CAN_READ", "bob": "RESTRICTED"}

    fails("users", "set-access", "alice", "ANYONE_WITH_NAME_CAN_READ", data_dir=data_dir, message="Invalid value",
          code=2)  # fmt: skip
    fails("users", "set-access", "nobody", "RESTRICTED", data_dir=data_dir, message="'nobody' was not found")
    ok("users", "set-access", "alice", "RESTRICTED", data_dir=data_dir)
    assert users_json(data_dir)[0]["defaultGeneralAccess"] == "RESTRICTED"


# --- sharing ------------------------------------------------------------------------------


def grant_of(data_dir: Path, store_id: str, username: str) -> Permission | None:
    async def action(s: Services) -> Permission | None:
        grant = await s.index.get_grant(store_id, (await s.users.find_user(username)).id)
        return grant.permission if grant else None

    return with_services(data_dir, action)


def test_share_grants_unshare(data_dir: Path, people: dict[str, str]) -> None:
    store_id = create_store(data_dir, "alice", "team")

    out = ok("users", "share", "alice~team", "bob", "READ", data_dir=data_dir).stdout
    assert "bob now has READ on alice~team" in out
    assert grant_of(data_dir, store_id, "bob") is Permission.READ
    listed = ok("users", "grants", store_id, data_dir=data_dir).stdout
    assert "bob" in listed and "READ" in listed

    ok("users", "share", store_id, "bob", "write", data_dir=data_dir)  # by ID, any case
    assert grant_of(data_dir, store_id, "bob") is Permission.WRITE
    listed = ok("users", "grants", "alice~team", data_dir=data_dir).stdout
    assert "WRITE" in listed and "READ" not in listed

    out = ok("users", "unshare", "alice~team", "bob", data_dir=data_dir).stdout
    assert "no longer shared with bob" in out
    assert grant_of(data_dir, store_id, "bob") is None
    assert "bob" not in ok("users", "grants", "alice~team", data_dir=data_dir).stdout
    fails("users", "unshare", "alice~team", "bob", data_dir=data_dir, message="is not shared with bob")


def test_sharing_refuses_bad_input(data_dir: Path, people: dict[str, str]) -> None:
    store_id = create_store(data_dir, "alice", "team")
    fails("users", "share", "alice~team", "nobody", "READ", data_dir=data_dir, message="'nobody' was not found")
    fails("users", "share", "alice~team", "alice", "READ", data_dir=data_dir, message="owner")
    fails("users", "share", "alice~team", "bob", "OWNER", data_dir=data_dir, message="OWNER", code=2)
    fails("users", "share", "alice~missing", "bob", "READ", data_dir=data_dir, message="was not found")
    fails("users", "share", "nosuchstoreid0000", "bob", "READ", data_dir=data_dir, message="was not found")
    fails("users", "share", "~team", "bob", "READ", data_dir=data_dir, message="OWNER~NAME", code=2)
    fails("users", "share", "nobody~team", "bob", "READ", data_dir=data_dir, message="'nobody' was not found")
    fails("users", "grants", "alice~missing", data_dir=data_dir, message="was not found")
    assert grant_of(data_dir, store_id, "bob") is None


# --- tokens -------------------------------------------------------------------------------


async def call(services: Services, token: str, method: str, path: str, **kwargs: Any) -> int:
    app = create_app(services=services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kvbox.test") as client:
        r = await client.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)
        return r.status_code


def test_tokens_create_scoped_list_and_revoke(data_dir: Path, people: dict[str, str]) -> None:
    inside = create_store(data_dir, "alice", "inside", records={"k": b"v"})
    outside = create_store(data_dir, "alice", "outside", records={"k": b"v"})

    created = ok("tokens", "create", "alice", "--name", "ci", "--read-only", "--store", inside, data_dir=data_dir)
    token = last_line(created.stdout)
    assert "read-only" in created.stderr and inside in created.stderr
    token_id = created.stderr.split("Created token ", 1)[1].split()[0]

    async def check_scope(s: Services) -> tuple[object, ...]:
        who = await s.auth.authenticate(token)
        assert who.token is not None
        return (
            who.token.read_only,
            who.token.store_ids,
            await call(s, token, "GET", f"/v2/key-value-stores/{inside}/records/k"),
            await call(s, token, "PUT", f"/v2/key-value-stores/{inside}/records/k", content=b"new"),
            await call(s, token, "GET", f"/v2/key-value-stores/{outside}/records/k"),
            await call(s, people["alice"], "PUT", f"/v2/key-value-stores/{outside}/records/k", content=b"new"),
        )

    assert with_services(data_dir, check_scope) == (True, (inside,), 200, 403, 403, 201)

    # Several stores, not read-only.
    two = ok("tokens", "create", "alice", "--store", inside, "--store", outside, data_dir=data_dir)

    async def check_two(s: Services) -> tuple[object, ...]:
        who = await s.auth.authenticate(last_line(two.stdout))
        assert who.token is not None
        return who.token.read_only, who.token.store_ids

    assert with_services(data_dir, check_two) == (False, (inside, outside))

    listed = ok("tokens", "list", "alice", data_dir=data_dir).stdout
    assert token_id in listed and "ci" in listed
    assert token not in listed  # secrets are never shown again
    assert token_id not in ok("tokens", "list", "bob", data_dir=data_dir).stdout

    assert "Token revoked" in ok("tokens", "revoke", token_id, data_dir=data_dir).stdout
    assert token_id not in ok("tokens", "list", "alice", data_dir=data_dir).stdout
    fails("tokens", "revoke", token_id, data_dir=data_dir, message="No such token")

    async def rejected(s: Services) -> bool:
        try:
            await s.auth.authenticate(token)
        except InvalidTokenError:
            return True
        return False

    assert with_services(data_dir, rejected)


def test_tokens_revoke_by_secret(data_dir: Path, people: dict[str, str]) -> None:
    ok("tokens", "revoke", people["bob"], data_dir=data_dir)
    fails("tokens", "revoke", people["bob"], data_dir=data_dir, message="No such token")
    assert "default" not in ok("tokens", "list", "bob", data_dir=data_dir).stdout
    assert "default" in ok("tokens", "list", "alice", data_dir=data_dir).stdout


def test_tokens_refuse_bad_input(data_dir: Path, people: dict[str, str]) -> None:
    fails("tokens", "create", "nobody", data_dir=data_dir, message="'nobody' was not found")
    fails("tokens", "create", "alice", "--token", "short", data_dir=data_dir, message="at least 16 characters")
    fails("tokens", "list", "nobody", data_dir=data_dir, message="'nobody' was not found")
    fails("tokens", "revoke", "not-a-token", data_dir=data_dir, message="No such token")


# --- sweep --------------------------------------------------------------------------------


def test_sweep_deletes_expired_unnamed_stores(data_dir: Path, people: dict[str, str]) -> None:
    two_days_ago = FakeClock(start_ms=int(time.time() * 1000) - 2 * DAY_MS)
    old_unnamed = create_store(data_dir, "alice", None, clock=two_days_ago, records={"big": BIG, "small": b"s"})
    old_named = create_store(data_dir, "alice", "kept", clock=two_days_ago, records={"big": BIG})
    fresh_unnamed = create_store(data_dir, "bob", None, records={"big": BIG})
    blobs = data_dir / "blobs"

    def blob_files() -> int:
        return sum(1 for p in blobs.rglob("*") if p.is_file() and len(p.name) == 32)

    assert blob_files() == 3

    # Three days' retention: nothing is old enough.
    out = ok("sweep", "--json", "--unnamed-retention", "3d", data_dir=data_dir).stdout
    assert json.loads(out) == {"storesDeleted": 0, "blobsFreed": 0, "recordsExpired": 0}

    out = ok("sweep", "--json", data_dir=data_dir, env={"KVBOX_UNNAMED_RETENTION": "1d"}).stdout
    assert json.loads(out) == {"storesDeleted": 1, "blobsFreed": 1, "recordsExpired": 0}
    assert blob_files() == 2

    async def present(s: Services) -> list[bool]:
        return [await s.index.get_store(i) is not None for i in (old_unnamed, old_named, fresh_unnamed)]

    assert with_services(data_dir, present) == [False, True, True]

    # Nothing left to do; the plain output says so.
    out = ok("sweep", data_dir=data_dir, env={"KVBOX_UNNAMED_RETENTION": "1d"}).stdout
    assert "Deleted 0 expired unnamed stores and 0 expired records; freed 0 record files." in out


def test_sweep_reclaims_expired_records(data_dir: Path, people: dict[str, str]) -> None:
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    store_id = create_store(data_dir, "alice", "cache", clock=FakeClock(start_ms=an_hour_ago),
                            records={"big": BIG, "small": b"s"}, expires_at=an_hour_ago + 60_000)  # fmt: skip
    create_store(data_dir, "alice", "cache", records={"kept": b"k"})
    blobs = data_dir / "blobs"
    assert sum(1 for p in blobs.rglob("*") if p.is_file() and len(p.name) == 32) == 1

    out = ok("sweep", "--json", data_dir=data_dir).stdout
    assert json.loads(out) == {"storesDeleted": 0, "blobsFreed": 0, "recordsExpired": 2}
    assert sum(1 for p in blobs.rglob("*") if p.is_file() and len(p.name) == 32) == 0

    async def counts(s: Services) -> tuple[int, int]:
        store = await s.index.get_store(store_id)
        assert store is not None
        return store.record_count, store.stats.storage_bytes

    assert with_services(data_dir, counts) == (1, 1)


def test_sweep_with_one_second_retention(data_dir: Path, people: dict[str, str]) -> None:
    in_the_past = FakeClock(start_ms=int(time.time() * 1000) - 60_000)
    store_id = create_store(data_dir, "alice", None, clock=in_the_past, records={"big": BIG})
    out = ok("sweep", data_dir=data_dir, env={"KVBOX_UNNAMED_RETENTION": "1s"}).stdout
    assert "Deleted 1 expired unnamed stores and 0 expired records; freed 1 record files." in out

    async def gone(s: Services) -> bool:
        return await s.index.get_store(store_id) is None and not await s.index.purge_pending()

    assert with_services(data_dir, gone)


def test_sweep_refuses_a_bad_retention(data_dir: Path, people: dict[str, str]) -> None:
    store_id = create_store(data_dir, "alice", None, clock=FakeClock(start_ms=0))
    fails("sweep", "--unnamed-retention", "soon", data_dir=data_dir, message="not a duration", code=2)
    proc = kvbox("sweep", data_dir=data_dir, env={"KVBOX_UNNAMED_RETENTION": "forever"})
    assert proc.returncode == 2 and "not a duration" in proc.stderr, proc.stderr

    async def present(s: Services) -> bool:
        return await s.index.get_store(store_id) is not None

    assert with_services(data_dir, present)


def test_users_set_access_reaches_running_services(data_dir: Path, people: dict[str, str]) -> None:
    """The account default set by the CLI is what the API then applies to FOLLOW_USER_SETTING stores."""
    store_id = create_store(data_dir, "alice", "follows", records={"k": b"v"})
    ok("users", "set-access", "alice", "ANYONE_WITH_ID_CAN_READ", data_dir=data_dir)

    async def anonymous_read(s: Services) -> tuple[int, GeneralAccess]:
        app = create_app(services=s)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kvbox.test") as c:
            status = (await c.get(f"/v2/key-value-stores/{store_id}/records/k")).status_code
        return status, (await s.users.find_user("alice")).default_general_access

    assert with_services(data_dir, anonymous_read) == (200, GeneralAccess.ANYONE_WITH_ID_CAN_READ)
