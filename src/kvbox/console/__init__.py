"""The web console: server-rendered pages over the same service calls and access checks as the API."""

from kvbox.console.app import create_console

__all__ = ["create_console"]
