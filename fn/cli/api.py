"""How `fn` reaches the gateway: a client from the root options, admin API calls whose
refusals become `fn: ...` messages (a syntax error with its caret, a traceback), and request
bodies given with --data.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from fn.cli.output import fail
from fn.client import Client, ClientError


def client(ctx: click.Context) -> Client:
    obj: dict[str, Any] = ctx.ensure_object(dict)
    return Client(obj.get("url"), obj.get("token"), namespace=obj.get("namespace"))


def api(ctx: click.Context, method: str, path: str, payload: Any = None) -> Any:
    """Call the admin API and return its JSON; a refusal exits with the gateway's message."""
    try:
        return client(ctx).api(method, path, payload)
    except ClientError as exc:
        fail(error_text(exc))


def error_text(exc: ClientError) -> str:
    """A refusal of the gateway as `fn` shows it: the message, and a syntax error's line with
    its caret or an import error's traceback."""
    details = exc.body.get("error", {}) if isinstance(exc.body, dict) else {}
    extra = ""
    if details.get("code") == "syntax_error" and details.get("text"):
        extra = (
            "\n    "
            + details["text"]
            + (
                "\n    " + " " * max(0, (details.get("offset") or 1) - 1) + "^"
                if details.get("offset")
                else ""
            )
        )
    elif details.get("traceback"):
        extra = "\n" + details["traceback"].rstrip()
    return str(exc) + extra


DATA_HELP = (
    "Body: JSON text, @FILE, or - for stdin. It must be valid JSON unless --content-type "
    "says what it is (text/plain, application/octet-stream, ...)."
)
CONTENT_TYPE_HELP = "The body's type; default application/json (and --data must be JSON)."


def read_data(data: str | None, content_type: str | None) -> tuple[bytes | None, str | None]:
    """The body given by --data (JSON text, @FILE or - for stdin) and its content type.

    Without --content-type the body must be JSON: text that is not (a typo, `{name: Ada}`) is
    refused, naming the problem, rather than sent as bytes the handler did not expect."""
    body: bytes | None = None
    if data is not None:
        if data == "-":
            body = sys.stdin.buffer.read()
        elif data.startswith("@"):
            try:
                body = Path(data[1:]).read_bytes()
            except OSError as exc:
                fail(f"cannot read {data[1:]}: {exc.strerror}")
        else:
            body = data.encode()
        if content_type is None and body is not None:
            try:
                json.loads(body)
            except ValueError as exc:
                where = "stdin" if data == "-" else data[1:] if data.startswith("@") else "--data"
                fail(
                    f"{where} is not valid JSON ({exc}); fix it, or send it as it is with "
                    "--content-type, e.g. --content-type text/plain"
                )
            content_type = "application/json"
    return body, content_type
