"""Console sign-in: a signed, expiring session cookie and the CSRF tokens derived from it.

The cookie names the user and the API token they signed in with (never the token itself).
Every request turns it back into the same `Principal` the API would build from that token,
so a token's scope (read-only, limited to some stores) applies in the console too, and
revoking the token ends its console sessions at once. Sessions carry no server-side state:
signing out clears the cookie, and an unused cookie stops working when it expires.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from kvbox.service.container import Services
from kvbox.service.principal import Principal

SESSION_COOKIE = "kvbox_session"
LOGIN_COOKIE = "kvbox_login"  # holds the nonce the sign-in form's CSRF token is derived from
SESSION_TTL_MS = 12 * 3600 * 1000
LOGIN_TTL_S = 3600
SECRET_FILE = "console-secret"
MAX_COOKIE = 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_secret(data_dir: Path) -> bytes:
    """The console's signing key, kept in the data dir so that every worker process (and a
    restarted server) accepts the same cookies. Created once, race-free, readable by its owner only."""
    path = data_dir / SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = data_dir / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if another process got there first: then use theirs
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    secret = bytes.fromhex(path.read_text().strip())
    if len(secret) < 16:
        raise ValueError(f"{path} does not hold a usable console secret; delete it to make a new one")
    return secret


@dataclass(frozen=True, slots=True)
class Session:
    user_id: str
    token_id: str
    nonce: str
    expires_at: int


class SessionSigner:
    """Issues and checks session cookies and CSRF tokens with one secret key."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, purpose: str, data: str) -> str:
        return _b64(hmac.new(self._secret, f"{purpose}:{data}".encode(), hashlib.sha256).digest())

    def issue(self, user_id: str, token_id: str, *, now_ms: int) -> tuple[Session, str]:
        """A new session (fresh nonce, so CSRF tokens of an older session stop working) and its cookie value."""
        session = Session(user_id, token_id, secrets.token_urlsafe(16), now_ms + SESSION_TTL_MS)
        payload = _b64(
            json.dumps(
                {"u": session.user_id, "t": session.token_id, "n": session.nonce, "e": session.expires_at},
                separators=(",", ":"),
            ).encode()
        )
        return session, f"{payload}.{self._mac('session', payload)}"

    def load(self, cookie: str | None, *, now_ms: int) -> Session | None:
        """The session in a cookie, or None when it is missing, forged, malformed or expired."""
        if not cookie or len(cookie) > MAX_COOKIE or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(self._mac("session", payload).encode(), mac.encode()):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(str(data["u"]), str(data["t"]), str(data["n"]), int(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires_at > now_ms else None

    def csrf_token(self, session: Session) -> str:
        return self._mac("csrf", session.nonce)

    def check_csrf(self, session: Session, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf_token(session).encode(), (presented or "").encode())

    def sign(self, purpose: str, data: str) -> str:
        """A MAC of `data` for one purpose (a MAC for one purpose never passes for another)."""
        return self._mac(purpose, data)

    def verify(self, purpose: str, data: str | None, presented: str | None) -> bool:
        if not data or not presented:
            return False
        return hmac.compare_digest(self._mac(purpose, data).encode(), presented.encode())

    def login_token(self, nonce: str) -> str:
        """The sign-in form's CSRF token, for the nonce in its (pre-session) cookie."""
        return self.sign("login", nonce)

    def check_login(self, nonce: str | None, presented: str | None) -> bool:
        return self.verify("login", nonce, presented)


async def principal_for(services: Services, session: Session) -> Principal | None:
    """The caller a session stands for, exactly as the API would see them with the same token;
    None when the user or the token is gone."""
    user = await services.stores.users.fresh(session.user_id)
    if user is None:
        return None
    for token in await services.index.list_tokens(user.id):
        if token.id == session.token_id:
            return Principal(user=user, token=token)
    return None
