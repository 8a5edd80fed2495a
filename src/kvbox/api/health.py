"""`/health`: answers once the process serves requests."""

from __future__ import annotations

from kvbox.api.http import Request, Send, send_json
from kvbox.service.container import Services
from kvbox.service.principal import Principal


async def health(req: Request, send: Send, svc: Services, who: Principal) -> None:
    await send_json(send, 200, {"data": {"status": "ok"}})
