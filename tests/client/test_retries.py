"""Retries, backoff and error typing, with an in-process transport that fails on purpose."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from kvbox.client import (
    ApiError,
    ForbiddenError,
    KvboxClient,
    KvboxClientAsync,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TransportError,
)
from kvbox.client._base import retry_after

STORE = {"id": "AAAAAAAAAAAAAAAAA", "createdAt": "2026-01-01T00:00:00.000Z"}


def error(status: int, type_: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"type": type_, "message": message}})


def scripted(*steps: httpx.Response | Exception) -> tuple[Callable[[httpx.Request], httpx.Response], list[bytes]]:
    """A handler answering with `steps` in order; it records each request body it received."""
    queue = list(steps)
    bodies: list[bytes] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(request.read())
        step = queue.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    return handle, bodies


def make(handler: Callable[[httpx.Request], httpx.Response], retries: int = 3) -> KvboxClient:
    return KvboxClient(
        "t",
        api_url="http://kvbox.test",
        transport=httpx.MockTransport(handler),
        max_retries=retries,
        min_delay_between_retries=0.0,
    )


def test_retries_5xx_then_succeeds() -> None:
    handler, bodies = scripted(
        error(503, "internal-server-error", "busy"), httpx.Response(500), httpx.Response(200, json={"data": STORE})
    )
    with make(handler) as client:
        assert client.key_value_store("x").get() is not None
    assert len(bodies) == 3


def test_retries_429_and_connection_errors() -> None:
    request = httpx.Request("GET", "http://kvbox.test")
    handler, bodies = scripted(
        error(429, "rate-limit-exceeded", "slow down"),
        httpx.ConnectError("refused", request=request),
        httpx.ReadError("reset", request=request),
        httpx.Response(201, json={}),
    )
    with make(handler) as client:
        client.key_value_store("x").set_record("k", {"big": "x" * 5000})
    # The same (compressed) body was sent on every attempt.
    assert len(bodies) == 4 and len(set(bodies)) == 1


def test_gives_up_after_max_retries_with_the_last_error() -> None:
    handler, bodies = scripted(*[error(502, "internal-server-error", "bad gateway")] * 3)
    with make(handler, retries=2) as client, pytest.raises(ServerError) as caught:
        client.key_value_store("x").list_keys()
    assert len(bodies) == 3
    err = caught.value
    assert (err.status, err.type, err.message, err.attempt) == (502, "internal-server-error", "bad gateway", 3)


def test_rate_limit_error_after_retries() -> None:
    handler, _ = scripted(*[error(429, "rate-limit-exceeded", "limit of 200")] * 2)
    with make(handler, retries=1) as client, pytest.raises(RateLimitError) as caught:
        client.key_value_store("x").get_record("k")
    assert caught.value.status == 429


def test_client_errors_are_not_retried() -> None:
    handler, bodies = scripted(error(403, "insufficient-permissions", "no"))
    with make(handler) as client, pytest.raises(ForbiddenError) as caught:
        client.key_value_store("x").get_record("k")
    assert len(bodies) == 1 and caught.value.type == "insufficient-permissions"


def test_connection_error_becomes_transport_error() -> None:
    request = httpx.Request("GET", "http://kvbox.test")
    handler, bodies = scripted(*[httpx.ConnectError("refused", request=request)] * 3)
    with make(handler, retries=2) as client, pytest.raises(TransportError) as caught:
        client.key_value_stores().list()
    assert len(bodies) == 3 and caught.value.attempt == 3


def test_unreachable_server_is_a_transport_error() -> None:
    client = KvboxClient("t", api_url="http://127.0.0.1:9", max_retries=1, min_delay_between_retries=0.0)
    with client, pytest.raises(TransportError):
        client.key_value_stores().list()


def test_a_one_shot_stream_is_not_retried() -> None:
    handler, bodies = scripted(httpx.Response(503), httpx.Response(201, json={}))

    def chunks() -> Iterator[bytes]:
        yield b"a" * 2000

    with make(handler) as client, pytest.raises(ServerError):
        client.key_value_store("x").set_record("k", chunks())
    assert len(bodies) == 1


def test_non_envelope_error_body() -> None:
    handler, _ = scripted(httpx.Response(418, text="<html>teapot</html>"))
    with make(handler) as client, pytest.raises(ApiError) as caught:
        client.key_value_store("x").get()
    assert caught.value.status == 418 and caught.value.type is None
    assert "teapot" in caught.value.message


@pytest.mark.anyio
async def test_async_client_retries() -> None:
    handler, bodies = scripted(httpx.Response(500), httpx.Response(200, json={"data": STORE}))
    transport = httpx.MockTransport(handler)
    async with KvboxClientAsync(
        "t", api_url="http://kvbox.test", transport=transport, min_delay_between_retries=0.0
    ) as client:
        info = await client.key_value_store("x").get()
    assert info is not None and info.id == STORE["id"] and len(bodies) == 2


def test_backoff_doubles_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(max_retries=8, min_delay=0.5, max_delay=10.0)
    assert policy.delay(1, rand=0.0) == 0.5
    assert policy.delay(1, rand=0.999) == pytest.approx(0.9995)
    assert policy.delay(3, rand=0.0) == 2.0
    assert policy.delay(10, rand=0.5) == 10.0
    assert 0.5 <= policy.delay(1) < 1.0
    assert policy.delay(1, rand=0.0, retry_after=4.0) == 4.0
    assert policy.delay(1, rand=0.0, retry_after=99.0) == 10.0


def test_retry_after_header() -> None:
    assert retry_after(httpx.Response(429, headers={"retry-after": "3"})) == 3.0
    assert retry_after(httpx.Response(429)) is None
    assert retry_after(httpx.Response(429, headers={"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0


def test_authorization_and_user_agent_headers() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": {**STORE, "name": "n"}})

    with make(handle) as client:
        client.key_value_stores().get_or_create("my-store")
    request = seen[0]
    assert request.headers["authorization"] == "Bearer t"
    assert request.headers["user-agent"].startswith("kvbox-client/")
    assert request.url.params["name"] == "my-store"
    assert json.loads(request.content) == {}


def test_a_conditional_write_is_retried_only_when_it_was_not_applied() -> None:
    """After a 5xx or a broken connection a conditional write may have been applied: a second
    attempt would fail its own condition, so the caller gets the first failure instead."""
    request = httpx.Request("PUT", "http://kvbox.test")
    handler, bodies = scripted(
        error(429, "rate-limit-exceeded", "slow down"),
        httpx.ConnectError("refused", request=request),
        httpx.Response(201, json={}, headers={"etag": '"new"'}),
    )
    with make(handler) as client:
        assert client.key_value_store("x").set_record("k", b"v", if_match='"old"') == '"new"'
    assert len(bodies) == 3
    for failure in (error(503, "internal-server-error", "busy"), httpx.ReadError("reset", request=request)):
        handler, bodies = scripted(failure, httpx.Response(201, json={}))
        with make(handler) as client, pytest.raises((ServerError, TransportError)):
            client.key_value_store("x").set_record("k", b"v", if_none_match="*")
        assert len(bodies) == 1
    handler, bodies = scripted(error(503, "internal-server-error", "busy"), httpx.Response(204))
    with make(handler) as client, pytest.raises(ServerError):
        client.key_value_store("x").delete_record("k", if_match="abc")
    assert len(bodies) == 1
