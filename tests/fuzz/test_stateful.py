"""A stateful test: random sequences of store, record, sharing and token operations through
the API, each answer checked against a simple model of what should be stored and who may
do what (hypothesis `RuleBasedStateMachine`), on every backend."""

from __future__ import annotations

from typing import Any, ClassVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conftest import ALICE_TOKEN, BOB_TOKEN
from fuzz.conftest import FUZZ, SCALE, Driven

RUNS = 60 * SCALE  # sequences per backend
STEPS = 30 if SCALE == 1 else 60  # operations per sequence (at most)

S = "/v2/key-value-stores"
NAMES = st.sampled_from(["s1", "s2", "s3"])
KEYS = st.sampled_from(["a", "b", "INPUT", "x.json", "k-1"])
BODIES = st.binary(max_size=1500)  # past the inline threshold (512) sometimes: bodies go to blob storage
PERMISSIONS = st.sampled_from(["READ", "WRITE", "MANAGE"])
RANK = {None: 0, "READ": 1, "WRITE": 2, "MANAGE": 3}


class Model:
    def __init__(self) -> None:
        self.stores: dict[str, dict[str, bytes]] = {}
        self.grants: dict[str, str] = {}  # store name -> bob's permission
        self.tokens: list[tuple[str, bool, str | None]] = []  # (secret, read_only, the only store ID)


class ApiMachine(RuleBasedStateMachine):
    driven: ClassVar[Driven]
    requests: ClassVar[int] = 0

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.ids: dict[str, str] = {}
        for store in self._alice_stores():  # a clean slate for every sequence
            assert self.call("DELETE", f"{S}/{store['id']}").status_code == 204

    def call(self, method: str, path: str, token: str = ALICE_TOKEN, **kwargs: Any) -> Any:
        ApiMachine.requests += 1
        r = self.driven.run(self.driven.client.request(method, path, headers={"Authorization": f"Bearer {token}"},
                                                       **kwargs))  # fmt: skip
        assert r.status_code < 500, (method, path, r.text)
        if r.status_code >= 400:
            assert r.json()["error"]["type"], r.text
        return r

    def _alice_stores(self) -> list[dict[str, Any]]:
        r = self.call("GET", S, params={"unnamed": "1"})
        items: list[dict[str, Any]] = r.json()["data"]["items"]
        return items

    @initialize(permission=PERMISSIONS)
    def two_stores_one_shared(self, permission: str) -> None:
        """Start where the interesting rules apply: stores exist, one is shared, scoped tokens exist."""
        self.create_store("s1")
        self.create_store("s2")
        self.share("s1", permission)
        self.issue_token(read_only=False, only="s2")
        self.issue_token(read_only=True, only=None)

    # stores

    @rule(name=NAMES)
    def create_store(self, name: str) -> None:
        r = self.call("POST", S, params={"name": name}, json={})
        assert r.status_code == (200 if name in self.model.stores else 201), r.text
        self.ids[name] = r.json()["data"]["id"]
        self.model.stores.setdefault(name, {})

    @rule(name=NAMES)
    def delete_store(self, name: str) -> None:
        r = self.call("DELETE", f"{S}/~{name}")
        assert r.status_code == (204 if name in self.model.stores else 404), r.text
        self.model.stores.pop(name, None)
        self.model.grants.pop(name, None)

    # records

    @rule(name=NAMES, key=KEYS, body=BODIES)
    def put_record(self, name: str, key: str, body: bytes) -> None:
        r = self.call("PUT", f"{S}/~{name}/records/{key}", content=body)
        assert r.status_code == (201 if name in self.model.stores else 404), r.text
        if name in self.model.stores:
            self.model.stores[name][key] = body

    @rule(name=NAMES, key=KEYS)
    def delete_record(self, name: str, key: str) -> None:
        r = self.call("DELETE", f"{S}/~{name}/records/{key}")
        assert r.status_code == (204 if name in self.model.stores else 404), r.text
        self.model.stores.get(name, {}).pop(key, None)

    @rule(name=NAMES, key=KEYS)
    def get_record(self, name: str, key: str) -> None:
        r = self.call("GET", f"{S}/~{name}/records/{key}")
        expected = self.model.stores.get(name, {}).get(key)
        if expected is None:
            assert r.status_code == 404, r.text
        else:
            assert r.status_code == 200 and r.content == expected

    @rule(name=NAMES, limit=st.integers(1, 3))
    def list_keys(self, name: str, limit: int) -> None:
        if name not in self.model.stores:
            assert self.call("GET", f"{S}/~{name}/keys").status_code == 404
            return
        seen: list[tuple[str, int]] = []
        params: dict[str, Any] = {"limit": limit}
        for _ in range(10):
            data = self.call("GET", f"{S}/~{name}/keys", params=params).json()["data"]
            seen += [(item["key"], item["size"]) for item in data["items"]]
            if not data["isTruncated"]:
                break
            params["exclusiveStartKey"] = data["nextExclusiveStartKey"]
        assert seen == sorted((k, len(v)) for k, v in self.model.stores[name].items())

    # sharing with bob

    @rule(name=NAMES, permission=PERMISSIONS)
    def share(self, name: str, permission: str) -> None:
        r = self.call("PUT", f"{S}/~{name}/grants/bob", json={"permission": permission})
        assert r.status_code == (200 if name in self.model.stores else 404), r.text
        if name in self.model.stores:
            self.model.grants[name] = permission

    @rule(name=NAMES)
    def unshare(self, name: str) -> None:
        r = self.call("DELETE", f"{S}/~{name}/grants/bob")
        assert r.status_code == (204 if name in self.model.grants else 404), r.text
        self.model.grants.pop(name, None)

    @rule(name=NAMES, key=KEYS, body=BODIES)
    def bob_writes(self, name: str, key: str, body: bytes) -> None:
        r = self.call("PUT", f"{S}/alice~{name}/records/{key}", token=BOB_TOKEN, content=body)
        if name not in self.model.stores:
            assert r.status_code == 404, r.text
        elif RANK[self.model.grants.get(name)] >= RANK["WRITE"]:
            assert r.status_code == 201, r.text
            self.model.stores[name][key] = body
        else:
            assert r.status_code == 403, r.text

    @rule(name=NAMES, key=KEYS)
    def bob_reads(self, name: str, key: str) -> None:
        r = self.call("GET", f"{S}/alice~{name}/records/{key}", token=BOB_TOKEN)
        if name not in self.model.stores:
            assert r.status_code == 404, r.text
        elif self.model.grants.get(name) is None:
            assert r.status_code == 403, r.text
        else:
            expected = self.model.stores[name].get(key)
            assert (r.status_code, r.content if expected is not None else None) == (
                (200, expected) if expected is not None else (404, None)
            )

    # scoped tokens (issued as `kvbox tokens create` does; used through the API)

    @rule(read_only=st.booleans(), only=st.none() | NAMES)
    def issue_token(self, read_only: bool, only: str | None) -> None:
        if only is not None and only not in self.ids:
            return
        scope = (self.ids[only],) if only is not None else None
        issued = self.driven.run(self.driven.services.users.create_token("alice", read_only=read_only,
                                                                         store_ids=scope))  # fmt: skip
        self.model.tokens.append((issued.secret, read_only, scope[0] if scope else None))

    @precondition(lambda self: bool(self.model.tokens))
    @rule(data=st.data(), name=NAMES, key=KEYS, body=BODIES)
    def write_with_a_token(self, data: st.DataObject, name: str, key: str, body: bytes) -> None:
        secret, read_only, only_id = data.draw(st.sampled_from(self.model.tokens))
        r = self.call("PUT", f"{S}/~{name}/records/{key}", token=secret, content=body)
        if name not in self.model.stores:
            assert r.status_code == 404, r.text
        elif read_only or (only_id is not None and only_id != self.ids.get(name)):
            assert r.status_code == 403, r.text
        else:
            assert r.status_code == 201, r.text
            self.model.stores[name][key] = body

    # the whole picture

    @invariant()
    def stores_are_the_models(self) -> None:
        names = sorted(s["name"] for s in self._alice_stores())
        assert names == sorted(self.model.stores)


def test_api_against_a_model(driven: Driven) -> None:
    ApiMachine.driven = driven
    ApiMachine.requests = 0
    run_state_machine_as_test(ApiMachine, settings=settings(FUZZ, max_examples=RUNS, stateful_step_count=STEPS))
    print(f"stateful requests on {driven.backend}: {ApiMachine.requests}")
    assert ApiMachine.requests >= RUNS * STEPS  # every sequence ran its steps (and checked the listing after each)
