"""`/health` (the process is up) and `/health/ready` (it can serve: index and blob store answer)."""

from __future__ import annotations

from kvbox.api.http import Request, Send, send_json
from kvbox.core.errors import ServiceUnavailableError
from kvbox.service.container import Services
from kvbox.service.principal import Principal
from kvbox.service.readiness import failing


async def health(req: Request, send: Send, svc: Services, who: Principal) -> None:
    await send_json(send, 200, {"data": {"status": "ok"}})


async def ready(req: Request, send: Send, svc: Services, who: Principal) -> None:
    checks = await svc.readiness.check()
    failed = failing(checks)
    if failed:
        reasons = "; ".join(f"{name}: {why}" for name, why in failed.items())
        raise ServiceUnavailableError(f"Not ready ({reasons}).", data={"checks": checks})
    await send_json(send, 200, {"data": {"status": "ok", "checks": checks}})
