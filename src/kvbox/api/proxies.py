"""Behind a reverse proxy: believe `X-Forwarded-For`, `-Proto` and `-Host` from trusted proxies only.

A request whose peer is one of `--trusted-proxies` gets its client address from
`X-Forwarded-For` (walked from the right, past every trusted hop, so a client cannot forge
its own address by sending the header itself), its scheme from `X-Forwarded-Proto`, and,
when the server has no `--public-url`, a public base URL from the forwarded scheme and host.
Anyone else's forwarding headers are ignored. The rate limiter and the access log then see
the real client, and emitted URLs carry the scheme the client used.
"""

from __future__ import annotations

import ipaddress
import re

from kvbox.api.http import Scope

MAX_KNOWN = 10_000
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    def __init__(self, networks: str, *, forwarded_base_url: bool = True) -> None:
        """`networks`: CIDR ranges, comma-separated (as `Settings.trusted_proxies` holds them)."""
        self._networks: list[Network] = [ipaddress.ip_network(n) for n in networks.split(",") if n]
        self._forwarded_base_url = forwarded_base_url
        self._known: dict[str, bool] = {}

    def trusts(self, host: str) -> bool:
        """Whether an address belongs to a trusted proxy (remembered per address)."""
        known = self._known.get(host)
        if known is None:
            if len(self._known) >= MAX_KNOWN:
                self._known.clear()
            known = self._known[host] = _within(host, self._networks)
        return known

    def apply(self, scope: Scope) -> None:
        """Rewrite the scope's client, scheme and public base URL from a trusted peer's headers."""
        client = scope.get("client")
        if not client or not self.trusts(client[0]):
            return
        forwarded: list[str] = []
        proto = host = None
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
            elif name == b"x-forwarded-proto":
                proto = value.decode("latin-1").split(",", 1)[0].strip().lower()
            elif name == b"x-forwarded-host":
                host = value.decode("latin-1").split(",", 1)[0].strip()
            elif name == b"host" and host is None:
                host = value.decode("latin-1").strip()
        if forwarded:
            scope["client"] = (self.client_of(",".join(forwarded), client[0]), 0)
        if proto in ("http", "https"):
            scope["scheme"] = proto
        if self._forwarded_base_url and host and _HOST.fullmatch(host):
            scope["kvbox.base_url"] = f"{scope.get('scheme', 'http')}://{host}"

    def client_of(self, forwarded_for: str, peer: str) -> str:
        """The client address in an `X-Forwarded-For` chain sent by the trusted `peer`: the
        rightmost hop that is not a trusted proxy (the leftmost when all are)."""
        nearest = peer
        for hop in reversed(forwarded_for.split(",")):
            address = _address(hop)
            if address is None:
                return nearest  # a hop a trusted proxy wrote but no address: stop at that proxy
            if not self.trusts(address):
                return address
            nearest = address
        return nearest


def _address(hop: str) -> str | None:
    text = hop.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _within(host: str, networks: list[Network]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)
