"""Who may use the admin: the admin token, as a bearer token or through a session cookie.

The API takes `Authorization: Bearer <admin token>`. The web app logs in with the same
token and keeps a signed session cookie (HttpOnly, SameSite=Strict, Secure over https)
that remembers a fingerprint of the token, so rotating the token ends every session.
A request authenticated by the cookie must also carry the session's CSRF token (a form's
hidden field or the `X-CSRF-Token` header) to change anything. Write keys are never
admin credentials.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass, field, replace

import orjson
from starlette.requests import Request
from starlette.responses import Response

from trackyard.admin import service
from trackyard.spec import now_ms
from trackyard.store import Store

SESSION_COOKIE = "trackyard_session"
SESSION_TTL_MS = 12 * 3600 * 1000
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class AuthError(Exception):
    """401: no valid credential; 403: a valid session without its CSRF token."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Session:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    token: str = ""  # fingerprint of the admin token it logged in with; empty before login
    expires_ms: int = field(default_factory=lambda: now_ms() + SESSION_TTL_MS)
    flash: str = ""  # a message for the next page shown
    flash_kind: str = ""  # "ok" or "error"

    def with_flash(self, message: str, kind: str = "ok") -> Session:
        return replace(self, flash=message, flash_kind=kind if message else "")


class SessionCodec:
    """Session ⇄ cookie value: base64url(JSON) "." base64url(HMAC-SHA256)."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self.key, payload, hashlib.sha256).digest()

    def encode(self, session: Session) -> str:
        payload = orjson.dumps(asdict(session))
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def decode(self, value: str | None) -> Session | None:
        """The session, or None when the cookie is absent, forged, malformed or expired."""
        if not value or value.count(".") != 1:
            return None
        encoded, signature = value.split(".")
        try:
            payload = _unb64(encoded)
            valid = hmac.compare_digest(_unb64(signature), self._sign(payload))
            data = orjson.loads(payload) if valid else None
            session = Session(**data) if isinstance(data, dict) else None
            expired = session is None or session.expires_ms < now_ms()
        except (binascii.Error, ValueError, TypeError):
            return None
        return None if expired else session


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def is_admin_token(store: Store, presented: str) -> bool:
    return hmac.compare_digest(presented.encode(), service.admin_token(store).encode())


def logged_in(store: Store, session: Session | None) -> bool:
    """True for a session opened with the admin token as it is now."""
    if session is None or not session.token:
        return False
    current = service.token_fingerprint(service.admin_token(store))
    return hmac.compare_digest(session.token, current)


def check_api_request(store: Store, codec: SessionCodec, request: Request) -> None:
    """Raise AuthError unless the request carries the admin token or a logged-in session
    (with its CSRF token when it changes something)."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not is_admin_token(store, credential.strip()):
            raise AuthError(401, "invalid_token", "send the admin token as 'Authorization: Bearer <token>'")
        return
    session = codec.decode(request.cookies.get(SESSION_COOKIE))
    if session is None or not logged_in(store, session):
        raise AuthError(
            401,
            "missing_token",
            "send the admin token as 'Authorization: Bearer <token>' (trackyard admin token)",
        )
    if request.method not in SAFE_METHODS:
        check_csrf(session, request.headers.get(CSRF_HEADER))


def check_csrf(session: Session, presented: str | None) -> None:
    if not presented or not hmac.compare_digest(presented.encode(), session.csrf.encode()):
        raise AuthError(
            403, "csrf_failed", "this form has expired or did not come from trackyard: reload the page"
        )


def set_session_cookie(response: Response, codec: SessionCodec, session: Session, secure: bool) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        codec.encode(session),
        max_age=SESSION_TTL_MS // 1000,
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )
