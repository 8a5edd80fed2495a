"""ETags mark record versions: no two writes may get the same one, whoever seeds `random` and
however the server forks its workers."""

from __future__ import annotations

import os
import random
import re

from kvbox.service.principal import hash_token
from kvbox.service.records import new_etag


def test_etags_are_24_hex_digits_and_differ() -> None:
    tags = {new_etag() for _ in range(10_000)}
    assert len(tags) == 10_000
    assert all(re.fullmatch(r"[0-9a-f]{24}", t) for t in tags)


def test_seeding_the_global_random_does_not_repeat_etags() -> None:
    random.seed(7)
    first = new_etag()
    random.seed(7)
    assert new_etag() != first


def test_a_forked_worker_draws_other_etags_than_its_parent() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ETag, then out without running the parent's cleanup
        try:
            os.write(write_end, new_etag().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        child = os.read(read_end, 64).decode()
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert len(child) == 24
    assert child != new_etag()


def test_token_hashes_are_sha256_hex_remembered_or_not() -> None:
    expected = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"  # sha256("test")
    assert hash_token("test") == expected
    assert hash_token("test") == expected  # the remembered one
    for n in range(5000):  # past the remembered count: forgotten, computed again
        hash_token(f"t-{n}")
    assert hash_token("test") == expected
