"""`/metrics`: Prometheus text, every worker of the process summed.

Closed unless the server has a metrics token (`KVBOX_METRICS_TOKEN`, sent as a bearer token)
or serves metrics publicly (`KVBOX_METRICS_PUBLIC=true`). API tokens never open it: metrics
show every store's traffic, which no single user may see.
"""

from __future__ import annotations

import hmac

from kvbox.api.http import Request, Send, send_bytes
from kvbox.core.errors import InsufficientPermissionsError, PageNotFoundError, TokenNotProvidedError
from kvbox.service.container import Services
from kvbox.service.principal import Principal
from kvbox.service.settings import Settings

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def check_access(req: Request, settings: Settings) -> None:
    """Raise unless the request may read the metrics."""
    if settings.metrics_public:
        return
    if not settings.metrics_token:
        raise InsufficientPermissionsError(
            "Metrics are closed: start the server with KVBOX_METRICS_TOKEN or KVBOX_METRICS_PUBLIC=true."
        )
    presented = req.header("authorization")
    if presented is None:
        raise TokenNotProvidedError("Send the metrics token as 'Authorization: Bearer <token>'.")
    scheme, _, value = presented.strip().partition(" ")
    expected = settings.metrics_token.encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), expected):
        raise InsufficientPermissionsError("This token does not open the metrics.")


async def metrics(req: Request, send: Send, svc: Services, who: Principal) -> None:
    if not svc.metrics.enabled:
        raise PageNotFoundError()
    check_access(req, svc.settings)
    body = await svc.metrics.scrape()
    await send_bytes(send, 200, [(b"content-type", CONTENT_TYPE), (b"content-length", str(len(body)).encode())], body)
