"""Where a broker source's connection URL is kept, and how it is shown.

A URL may carry credentials (`amqp://user:password@host/vhost`): it is a secret. It is sealed
for storage with the platform's secrets key, the one `fn secret set` uses (gateway/vault.py:
Fernet, the key from `EMBER_SECRETS_KEY` or the state dir's `secrets.key`), so the column
(ember_triggers.source_url) holds nothing readable in a dump or a replica. It is opened only to
connect (the source) and to show its `mask_url` form (the API, the CLI): never shown itself.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit


class Cipher(Protocol):
    """Encrypts and decrypts with the platform's secrets key (gateway/vault.py's `Vault`).
    Either raises when there is no key, or `decrypt` when the token is not one of this key."""

    def encrypt(self, plain: bytes) -> bytes: ...

    def decrypt(self, token: bytes) -> bytes: ...


def seal_url(url: str, cipher: Cipher) -> str:
    """What is stored for `url`: a Fernet token (URL-safe base64 text)."""
    return cipher.encrypt(url.encode()).decode("ascii")


def open_url(sealed: str, cipher: Cipher) -> str:
    """The URL a stored value stands for."""
    return cipher.decrypt(sealed.encode("ascii")).decode()


def mask_url(url: str) -> str:
    """`url` without its password (user part or query): what may be shown."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
        if not user:
            netloc = f":***@{host}"
    query = parts.query
    if query:
        query = urlencode(
            [
                (k, "***" if any(w in k.lower() for w in ("pass", "token", "secret")) else v)
                for k, v in parse_qsl(query, keep_blank_values=True)
            ],
            safe="/*",
        )
    return parts._replace(netloc=netloc, query=query).geturl()
