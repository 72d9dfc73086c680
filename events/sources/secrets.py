"""Where a broker source's connection URL is kept, and how it is shown.

A URL may carry credentials (`amqp://user:password@host/vhost`): it is a secret. It is sealed
for storage and opened only by the source that connects with it; what the API and the CLI show
is `mask_url`'s form, never the URL itself. Today sealing keeps the URL as is in a column that
nothing shows (ember_triggers.source_url); these two functions are the one place to change when
secrets move to an encrypted store.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit


def seal_url(url: str) -> str:
    """What is stored for `url`."""
    return url


def open_url(sealed: str) -> str:
    """The URL a stored value stands for."""
    return sealed


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
