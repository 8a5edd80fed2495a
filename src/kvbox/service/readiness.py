"""Whether this process can serve requests: its metadata index and blob store both answer.

`/health/ready` asks on every call (probes come every few seconds, a check costs one trivial
query and one small write or bucket request); `/health` only says the process is up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from kvbox.backends.base import BlobStore, MetadataIndex
from kvbox.core.errors import KvboxError

# A check that has not answered by then has failed: a probe must answer before the prober gives up.
CHECK_TIMEOUT_S = 3.0
OK = "ok"


class Readiness:
    def __init__(self, index: MetadataIndex, blobs: BlobStore, *, timeout_s: float = CHECK_TIMEOUT_S) -> None:
        self._checks: dict[str, Callable[[], Awaitable[None]]] = {"index": index.ping, "blobStore": blobs.ping}
        self._timeout_s = timeout_s

    async def check(self) -> dict[str, str]:
        """Each check's outcome, `ok` or why it failed; the checks run at once, each bounded in time."""
        outcomes = await asyncio.gather(*(self._run(probe) for probe in self._checks.values()))
        return dict(zip(self._checks, outcomes, strict=True))

    async def _run(self, probe: Callable[[], Awaitable[None]]) -> str:
        try:
            await asyncio.wait_for(probe(), self._timeout_s)
        except TimeoutError:
            return f"no answer within {self._timeout_s:g} s"
        except KvboxError as e:
            return e.message
        except Exception as e:  # a driver failure the backend did not wrap: still a failed check
            return f"{type(e).__name__}: {e}"
        return OK


def failing(checks: dict[str, str]) -> dict[str, str]:
    """The checks that did not pass."""
    return {name: outcome for name, outcome in checks.items() if outcome != OK}
