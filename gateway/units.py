"""Check what a deploy request gives: names, the function's configuration, its files (a zip).

Every error says which setting, quotes the value, and shows what is expected. Durations and
sizes are parsed by `config.units`.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import zipfile
from collections.abc import Mapping
from typing import Any

from config.units import MIN_TIMEOUT_S, ConfigError, parse_duration_s, parse_size_bytes
from invoker.protocol import STYLES
from store.records import FunctionConfig

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
FILENAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*/){0,8}[A-Za-z_][A-Za-z0-9_]*\.py$")
"""The main module: handler.py, or a module in a package directory like hello_world/app.py."""
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENTRY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,8}$")
"""A name in the module, or an attribute path (an ASGI app's `api.app`)."""
STYLE_OPTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "lambda": {"event": ("v2", "v1", "alb", "url", "payload"), "routes": ()},
    "openwhisk": {"web": ("true", "raw")},
}
"""The settings each style takes, and their values (the first is the default); () is free
text (lambda's routes: the routes of a SAM template, `GET /items/{id};ANY /{proxy+}`)."""
MAX_STYLE_OPTION_CHARS = 4096

MAX_CONCURRENCY = 1000
MAX_ATTEMPTS = 100
MAX_EVENT_AGE_S = 30 * 86400.0


MAX_UNPACKED_SOURCE_BYTES = 100 << 20
MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class ArchiveError(ValueError):
    """A function's files (a zip) cannot be accepted; the message says why."""


def read_archive(encoded: Any, main: str, max_bytes: int) -> tuple[bytes, dict[str, str]]:
    """Check a deploy's files: a base64 zip, at most `max_bytes`, with `main` at its top, only
    relative paths, no links. Returns the zip and {path: text} of its .py files."""
    if not isinstance(encoded, str):
        raise ArchiveError("archive must be a base64-encoded zip")
    try:
        archive = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ArchiveError("archive is not valid base64") from None
    if len(archive) > max_bytes:
        raise ArchiveError(
            f"the function's files are {len(archive)} bytes zipped, over the "
            f"limit of {max_bytes} bytes (FN_MAX_SOURCE)"
        )
    try:
        files = zipfile.ZipFile(io.BytesIO(archive))
        infos = files.infolist()
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"archive is not a zip: {exc}") from None
    if sum(i.file_size for i in infos) > MAX_UNPACKED_SOURCE_BYTES:
        raise ArchiveError(
            f"the function's files unpack to more than {MAX_UNPACKED_SOURCE_BYTES >> 20} MiB"
        )
    texts = {}
    for info in infos:
        parts = info.filename.split("/")
        if info.filename.startswith("/") or ".." in parts or "\\" in info.filename:
            raise ArchiveError(f"{info.filename!r}: paths must be relative, without ..")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise ArchiveError(f"{info.filename!r}: symbolic links are not accepted")
        if info.filename.endswith(".py"):
            try:
                texts[info.filename] = files.read(info).decode()
            except UnicodeDecodeError:
                raise ArchiveError(f"{info.filename} is not UTF-8 text") from None
    if main not in texts:
        raise ArchiveError(f"the function's files have no {main} at their top")
    return archive, texts


def archive_names(archive: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(archive)) as files:
        return sorted(i.filename for i in files.infolist() if not i.is_dir())


def _small_number(raw: str) -> bool:
    """ASCII digits that `int` takes and no setting overflows ("²" is a digit to `isdigit`)."""
    raw = raw.strip()
    return raw.isascii() and raw.isdigit() and len(raw) <= 9


def parse_function_config(body: Mapping[str, Any]) -> FunctionConfig:
    """The configuration of a deploy request, checked; raises ConfigError on the first bad one."""
    defaults = FunctionConfig()
    entry = body.get("entry", defaults.entry)
    if not isinstance(entry, str) or not ENTRY.match(entry):
        raise ConfigError("handler", entry, "the name of a function in the module, like handler")
    style = body.get("style", "auto")
    if style not in (*STYLES, "auto"):
        raise ConfigError("--style", style, "one of " + ", ".join(("auto", *STYLES)))
    style_options = _style_options(style, body.get("style_options") or {})
    env = body.get("env", {})
    if not isinstance(env, Mapping):
        raise ConfigError("env", env, "an object of NAME: value strings")
    for key, val in env.items():
        if not ENV_KEY.match(str(key)):
            raise ConfigError("--env name", key, "letters, digits and _, not starting with a digit")
        if not isinstance(val, str):
            raise ConfigError(f"--env {key}", val, "a string")
    concurrency = body.get("concurrency", defaults.concurrency)
    if isinstance(concurrency, str) and _small_number(concurrency):
        concurrency = int(concurrency)
    if (
        isinstance(concurrency, bool)
        or not isinstance(concurrency, int)
        or not 1 <= concurrency <= MAX_CONCURRENCY
    ):
        raise ConfigError(
            "--concurrency", concurrency, f"a whole number from 1 to {MAX_CONCURRENCY}"
        )
    attempts = body.get("max_attempts", defaults.max_attempts)
    if isinstance(attempts, str) and _small_number(attempts):
        attempts = int(attempts)
    if (
        isinstance(attempts, bool)
        or not isinstance(attempts, int)
        or not 1 <= attempts <= MAX_ATTEMPTS
    ):
        raise ConfigError("--max-attempts", attempts, f"a whole number from 1 to {MAX_ATTEMPTS}")
    preimport = body.get("preimport") or []
    if isinstance(preimport, str):
        preimport = [m.strip() for m in preimport.split(",") if m.strip()]
    if (
        not isinstance(preimport, list)
        or len(preimport) > 50
        or not all(isinstance(m, str) and MODULE.match(m) for m in preimport)
    ):
        raise ConfigError(
            "--preimport", preimport, "module names separated by commas, like numpy,pandas"
        )
    network = body.get("network", defaults.network)
    if network not in ("egress", "none"):
        raise ConfigError(
            "--network",
            network,
            "egress (the internet, no local or private address) or none (no network at all)",
        )
    cpus = body.get("cpus", defaults.cpus)
    try:
        cpus = float(cpus)
    except (TypeError, ValueError):
        cpus = -1.0
    if isinstance(body.get("cpus"), bool) or not 0.01 <= cpus <= 64:
        raise ConfigError("--cpus", body.get("cpus"), "a number of cores from 0.01 to 64, like 0.5")
    return FunctionConfig(
        network=network,
        cpus=cpus,
        preimport=tuple(preimport),
        max_attempts=attempts,
        max_event_age_s=parse_duration_s(
            body.get("max_event_age", defaults.max_event_age_s),
            "--max-event-age",
            maximum_s=MAX_EVENT_AGE_S,
        ),
        entry=entry,
        style=style,
        style_options=style_options,
        env={str(k): v for k, v in env.items()},
        timeout_s=parse_duration_s(
            body.get("timeout", defaults.timeout_s), "--timeout", minimum_s=MIN_TIMEOUT_S
        ),
        memory_bytes=parse_size_bytes(body.get("memory", defaults.memory_bytes), "--memory"),
        concurrency=concurrency,
    )


def _style_options(style: str, options: Any) -> dict[str, str]:
    if not isinstance(options, Mapping):
        raise ConfigError("style_options", options, "an object of setting: value strings")
    known = (
        {k: v for settings in STYLE_OPTIONS.values() for k, v in settings.items()}
        if style == "auto"
        else STYLE_OPTIONS.get(style, {})
    )
    for key, value in options.items():
        if key not in known:
            raise ConfigError(
                f"style option {key}",
                value,
                f"one of the {style} style's settings: " + (", ".join(known) or "(none)"),
            )
        if not known[key]:
            if not isinstance(value, str) or len(value) > MAX_STYLE_OPTION_CHARS:
                raise ConfigError(
                    f"style option {key}", value, f"text of at most {MAX_STYLE_OPTION_CHARS} chars"
                )
        elif value not in known[key]:
            raise ConfigError(f"style option {key}", value, "one of " + ", ".join(known[key]))
    return {str(k): str(v) for k, v in options.items()}


def checked_style_options(style: str, options: Any) -> dict[str, str]:
    """The settings an instance says it bound `style` with, as stored: only those the style
    has, with values it takes (the reply comes from the function's process)."""
    if not isinstance(options, Mapping):
        return {}
    kept = {}
    for key, value in options.items():
        try:
            kept.update(_style_options(style, {key: value}))
        except ConfigError:
            continue
    return kept


ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")
MAX_SECRETS = 20


def parse_access(body: Mapping[str, Any], default_auth: str) -> dict[str, Any]:
    """A deploy's access settings (FunctionConfig's auth, secrets, cors_origins), checked;
    `default_auth` is the namespace's default. Raises ConfigError."""
    auth = body.get("auth") or default_auth
    if auth not in ("public", "key"):
        raise ConfigError("--auth", auth, "public (anyone may call it) or key (an invoker key)")
    secrets = body.get("secrets") or []
    if (
        not isinstance(secrets, list)
        or len(secrets) > MAX_SECRETS
        or not all(isinstance(s, str) and NAME.fullmatch(s) for s in secrets)
    ):
        raise ConfigError("--secret", secrets, f"up to {MAX_SECRETS} names of secrets")
    origins = body.get("cors_origins") or []
    if (
        not isinstance(origins, list)
        or len(origins) > 50
        or not all(isinstance(o, str) and (o == "*" or ORIGIN.fullmatch(o)) for o in origins)
    ):
        raise ConfigError(
            "--cors-origin", origins, "origins like https://app.example.com (or * for any)"
        )
    return {
        "auth": auth,
        "secrets": tuple(dict.fromkeys(secrets)),
        "cors_origins": tuple(dict.fromkeys(o.rstrip("/") for o in origins)),
    }
