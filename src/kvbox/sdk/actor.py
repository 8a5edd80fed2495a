"""`Actor`: the Apify SDK's Actor helpers for key-value stores, over kvbox's `KeyValueStore`.

    async with Actor:
        config = await Actor.get_input()
        await Actor.set_value("OUTPUT", {"done": True})

Unlike the Apify SDK, leaving the context never ends the process.
"""

from __future__ import annotations

from typing import Any

from kvbox.sdk.config import Configuration
from kvbox.sdk.key_value_store import KeyValueStore


class ActorType:
    """The type of `Actor`. `Actor(configuration=...)` gives an instance with its own configuration."""

    def __init__(self, configuration: Configuration | None = None) -> None:
        self._given = configuration
        self._config: Configuration | None = None
        self._default_store: KeyValueStore | None = None

    def __call__(self, *, configuration: Configuration | None = None) -> ActorType:
        return ActorType(configuration)

    @property
    def is_initialized(self) -> bool:
        return self._default_store is not None

    @property
    def configuration(self) -> Configuration:
        """The configuration in use (read from the environment by `init` unless one was given)."""
        return self._require()[0]

    async def init(self) -> None:
        """Read the configuration and open the default store (which also finds the input)."""
        if self._default_store is not None:
            raise RuntimeError("The Actor is already initialized")
        config = self._given or Configuration.from_env()
        self._default_store = await KeyValueStore.open(configuration=config)
        self._config = config

    async def exit(self) -> None:
        """Save local store timestamps and close HTTP clients. Does not end the process."""
        if self._default_store is None:
            return
        self._default_store = None
        self._config = None
        await KeyValueStore.close_all()

    async def __aenter__(self) -> ActorType:
        await self.init()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.exit()

    def _require(self) -> tuple[Configuration, KeyValueStore]:
        if self._default_store is None or self._config is None:
            raise RuntimeError("The Actor is not initialized: use `async with Actor:` or `await Actor.init()` first")
        return self._config, self._default_store

    async def get_input(self) -> Any:
        """The input record of the default store: key `ACTOR_INPUT_KEY` (e.g. `INPUT-METAMORPH-1`), else `INPUT`.

        None when there is no input. Locally that is `INPUT.json`, `INPUT.txt` or a bare `INPUT` file.
        """
        config, store = self._require()
        return await store.get_value(config.input_key)

    async def get_value(self, key: str, default_value: Any = None) -> Any:
        """A value from the default store."""
        return await self._require()[1].get_value(key, default_value)

    async def set_value(self, key: str, value: Any, *, content_type: str | None = None) -> None:
        """Store a value in the default store; `None` deletes the record."""
        await self._require()[1].set_value(key, value, content_type)

    async def open_key_value_store(
        self, *, id: str | None = None, name: str | None = None, force_cloud: bool = False
    ) -> KeyValueStore:
        """Open a store (the default store without `id` and `name`); `force_cloud` opens it remotely."""
        config, store = self._require()
        if id is None and name is None and not force_cloud:
            return store
        return await KeyValueStore.open(id=id, name=name, configuration=config, force_cloud=force_cloud)


Actor = ActorType()
