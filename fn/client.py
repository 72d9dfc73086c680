"""A small HTTP client for the platform's API (stdlib only: the CLI starts fast).

Finds the gateway and token the way `fn up` leaves them: `FN_URL` / `FN_TOKEN`, else the
`gateway.json` and `token` files in the state dir.
"""

from __future__ import annotations

import http.client
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit


def state_dir() -> Path:
    if os.environ.get("FN_STATE_DIR"):
        return Path(os.environ["FN_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ember"


class ClientError(Exception):
    """A call failed; the message is what the user should read."""

    def __init__(
        self, message: str, status: int | None = None, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or {}


@dataclass(slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def discover_url() -> str:
    if os.environ.get("FN_URL"):
        return os.environ["FN_URL"].rstrip("/")
    try:
        return str(json.loads((state_dir() / "gateway.json").read_text())["url"])
    except (OSError, ValueError, KeyError):
        return "http://127.0.0.1:8080"


def discover_token() -> str | None:
    if os.environ.get("FN_TOKEN"):
        return os.environ["FN_TOKEN"]
    try:
        return (state_dir() / "token").read_text().strip() or None
    except OSError:
        return None


class Client:
    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout_s: float = 900.0,
        namespace: str | None = None,
    ) -> None:
        """`timeout_s` covers the slowest answer: a deploy that builds its requirements.
        `namespace`: where functions, keys' scopes and secrets are (None: the key's own, or
        `default`)."""
        self.url = (url or discover_url()).rstrip("/")
        self.token = token if token is not None else discover_token()
        self.timeout_s = timeout_s
        self.namespace = namespace

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        admin: bool = True,
    ) -> Reply:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(f'invalid gateway URL "{self.url}": expected http://HOST:PORT')
        conn_cls = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        conn = conn_cls(parts.hostname, parts.port, timeout=self.timeout_s)
        all_headers = dict(headers or {})
        if admin and self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        if admin and self.namespace:
            all_headers["X-Ember-Namespace"] = self.namespace
        try:
            conn.request(method, parts.path.rstrip("/") + path, body=body, headers=all_headers)
            response = conn.getresponse()
            data = response.read()
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            raise ClientError(
                f"cannot reach the Ember gateway at {self.url} ({exc.strerror}); "
                "start it with: fn up (or make up), or set FN_URL"
            ) from None
        except OSError as exc:
            raise ClientError(f"request to {self.url} failed: {exc}") from None
        finally:
            conn.close()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)

    def api(self, method: str, path: str, payload: Any = None) -> Any:
        """Call the admin API; return the decoded JSON, raise ClientError on an error status."""
        body = json.dumps(payload).encode() if payload is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        reply = self.request(method, path, body, headers)
        try:
            data = reply.json() if reply.body else {}
        except ValueError:
            data = {}
        if reply.status >= 400:
            raise ClientError(error_message(reply.status, data), reply.status, data)
        return data

    def invoke(
        self,
        name: str,
        data: bytes | None,
        content_type: str | None,
        extra_headers: dict[str, str] | None = None,
    ) -> Reply:
        headers = {"Content-Type": content_type} if content_type else {}
        headers.update(extra_headers or {})
        path = f"/fn/{quote(name, safe=':')}"
        if self.namespace and self.namespace != "default":
            path = f"/fn/{quote(self.namespace)}/{quote(name, safe=':')}"
        reply = self.request("POST", path, data, headers, admin=False)
        if reply.status == 401 and self.token and b'"key_required"' in reply.body:
            # A private function: send the key only to it (a public function's handler sees
            # the headers it is called with; a private one's does not see this one).
            headers["Authorization"] = f"Bearer {self.token}"
            reply = self.request("POST", path, data, headers, admin=False)
        return reply


def error_message(status: int, data: Any) -> str:
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message") or data["error"].get("code"))
    if status == 401:
        return (
            "the gateway refused the admin token (set FN_TOKEN, or run fn on the machine "
            "where fn up runs)"
        )
    return f"the gateway answered HTTP {status}"
