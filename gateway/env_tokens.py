"""Tokens that let an invoker pod fetch one environment for a few minutes.

A pod gets its token in the specialize message (never in its spec or environment variables)
and sends it to fetch the environment's archive (`gateway.environments`). A token is

    v1.<environment hash>.<expiry, unix seconds>.<HMAC-SHA256, hex>

signed over the hash and the expiry with a key derived from the admin token, so every gateway
replica (they share FN_TOKEN) checks what any of them issued, and nothing a pod holds helps it
toward the admin token, the database or another environment.

`TokenRefused` carries the HTTP status: 401 for no token, a forged or malformed one, or one
that expired; 403 for a genuine token of another environment.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

_PREFIX = "v1"


class TokenRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class EnvTokens:
    def __init__(
        self, admin_token: str, *, ttl_s: float = 600.0, clock: Callable[[], float] = time.time
    ) -> None:
        """`ttl_s`: how long a token is good for: it must cover a pod start (when no generic
        pod is ready) and the fetch (EMBER_ENV_TOKEN_TTL)."""
        self._key = hmac.new(
            admin_token.encode(), b"ember: environment fetch tokens", hashlib.sha256
        ).digest()
        self.ttl_s = ttl_s
        self._clock = clock

    def _mac(self, env_hash: str, expiry: int) -> str:
        message = f"{_PREFIX}\n{env_hash}\n{expiry}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def issue(self, env_hash: str) -> str:
        expiry = int(self._clock() + self.ttl_s) + 1
        return f"{_PREFIX}.{env_hash}.{expiry}.{self._mac(env_hash, expiry)}"

    def check(self, token: str, env_hash: str) -> None:
        """Return if `token` lets its holder fetch `env_hash` now; else raise TokenRefused."""
        if not token:
            raise TokenRefused(
                401,
                "unauthorized",
                "missing token: invoker pods get one in the specialize message; send "
                "Authorization: Bearer <token>",
            )
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != _PREFIX or not parts[2].isdigit():
            raise TokenRefused(401, "unauthorized", "malformed environment token")
        _, scope, expiry_text, mac = parts
        expiry = int(expiry_text)
        if not hmac.compare_digest(mac.encode(), self._mac(scope, expiry).encode()):
            raise TokenRefused(401, "unauthorized", "wrong environment token")
        if expiry < self._clock():
            raise TokenRefused(
                401,
                "token_expired",
                f"the environment token expired {self._clock() - expiry:.0f}s ago "
                f"(tokens last EMBER_ENV_TOKEN_TTL, {self.ttl_s:g}s); the next cold start "
                "sends a new one",
            )
        if scope != env_hash:
            raise TokenRefused(
                403,
                "forbidden",
                f"this token is for environment {scope[:12]}, not {env_hash[:12]}",
            )
