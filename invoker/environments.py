"""A function's environment (its requirements) fetched into an instance, before its code runs.

On Kubernetes an invoker pod has no copy of the platform's environments and no database: the
specialize message names the environment (`invoker.protocol.EnvironmentSource`): its hash, the
sha256 and size of its archive, a URL and a token good for that environment only, for a few
minutes. The archive is downloaded (standard library only), checked against the sha256 before
anything in it is looked at, unpacked with tarfile's "data" filter (no absolute paths, no `..`,
no links out of the directory, no devices), and renamed into place complete, so a directory
named after a hash is always a whole, checked environment.

The cache is the directory the pod spec provides (`EMBER_ENV_DIR`, an emptyDir): an environment
already there is used as it is.

Errors: `EnvironmentUnavailable` (the fetch failed: HTTP status, network) and below it
`EnvironmentRefused` (what arrived is not the environment: wrong size or sha256, an entry that
would land outside the directory).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoker.protocol import EnvironmentSource

ENV_DIR_VARIABLE = "EMBER_ENV_DIR"
"""Where the pod spec mounts the environments cache (an emptyDir)."""
FETCH_TIMEOUT_S = 30.0
"""Longest wait on the network for one read (the whole fetch is bounded by the specialize
timeout of the platform)."""
_HASH = re.compile(r"[0-9a-f]{64}")
_CHUNK_BYTES = 1 << 20

UrlOpen = Callable[..., Any]


class EnvironmentUnavailable(Exception):
    """The environment could not be fetched."""


class EnvironmentRefused(EnvironmentUnavailable):
    """What was fetched is not the environment the platform named: nothing of it is used."""


@dataclass(slots=True, frozen=True, kw_only=True)
class Fetched:
    path: Path
    """The unpacked environment: what goes on sys.path."""
    cached: bool
    """It was in the cache already (nothing downloaded)."""
    fetch_ms: float


def cache_dir() -> Path:
    """The pod's environments cache (`EMBER_ENV_DIR`), else one in the temporary directory."""
    configured = os.environ.get(ENV_DIR_VARIABLE)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "ember-envs"


def ensure_environment(
    source: EnvironmentSource, directory: Path, *, urlopen: UrlOpen = urllib.request.urlopen
) -> Fetched:
    """The unpacked environment `source` names, from the cache or fetched into it."""
    started = time.perf_counter()
    env_hash, digest = str(source.get("hash", "")), str(source.get("sha256", ""))
    if not _HASH.fullmatch(env_hash) or not _HASH.fullmatch(digest):
        raise EnvironmentRefused("the environment's hash or sha256 is not a sha256 hex digest")
    target = directory / env_hash
    if target.is_dir():
        return Fetched(path=target, cached=True, fetch_ms=_ms_since(started))
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=directory))
    try:
        archive = work / "env.tar.gz"
        _download(source, archive, urlopen)
        site = work / "site"
        unpack(archive, site)
        try:
            site.rename(target)
        except OSError:
            if not target.is_dir():  # else another fetch put it there first: as good
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Fetched(path=target, cached=False, fetch_ms=_ms_since(started))


def _download(source: EnvironmentSource, archive: Path, urlopen: UrlOpen) -> None:
    """Download the archive to `archive`; refused unless its size and sha256 are the ones the
    platform sent."""
    url, expected_bytes = str(source.get("url", "")), int(source.get("size_bytes", 0))
    if not url.startswith(("http://", "https://")):
        raise EnvironmentRefused(f"the environment's URL {url!r} is not http(s)")
    short = str(source["hash"])[:12]
    request = urllib.request.Request(
        url,
        headers={
            "Authorization": f"Bearer {source.get('token', '')}",
            "Accept-Encoding": "identity",
        },
    )
    digest = hashlib.sha256()
    received = 0
    try:
        with urlopen(request, timeout=FETCH_TIMEOUT_S) as response, archive.open("wb") as out:
            while chunk := response.read(_CHUNK_BYTES):
                received += len(chunk)
                if received > expected_bytes:
                    raise EnvironmentRefused(
                        f"the archive of environment {short} from {url} is larger than the "
                        f"{expected_bytes} bytes the platform announced: refused"
                    )
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise EnvironmentUnavailable(
            f"could not fetch environment {short} from {url}: {exc.code} {_error_text(exc)}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EnvironmentUnavailable(
            f"could not fetch environment {short} from {url}: {reason}; is the environment "
            "cache reachable from invoker pods? (docs/kubernetes.md)"
        ) from None
    if received != expected_bytes or digest.hexdigest() != source["sha256"]:
        raise EnvironmentRefused(
            f"the archive of environment {short} from {url} does not match the sha256 the "
            f"platform sent ({received} bytes, sha256 {digest.hexdigest()[:12]}, expected "
            f"{expected_bytes} bytes, sha256 {str(source['sha256'])[:12]}): refused, not unpacked"
        )


def _error_text(exc: urllib.error.HTTPError) -> str:
    """The message of the platform's JSON error, else the status's reason."""
    try:
        body = exc.read(4096).decode(errors="replace")
    except OSError:
        body = ""
    match = re.search(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)"', body)
    return match[1] if match else str(exc.reason)


def unpack(archive: Path, site: Path) -> None:
    """Unpack a checked archive into `site` (created). Refused, and nothing left, when an
    entry would land outside it or is not a file, directory or link (tarfile's "data" filter)."""
    site.mkdir(mode=0o700)
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            tar.extractall(site, filter=_checked)  # (one pass: the checks are per entry)
    except (tarfile.FilterError, EnvironmentRefused) as exc:
        shutil.rmtree(site, ignore_errors=True)
        raise EnvironmentRefused(f"the environment's archive is refused: {exc}") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        shutil.rmtree(site, ignore_errors=True)
        raise EnvironmentUnavailable(
            f"the environment's archive could not be unpacked: {exc}"
        ) from exc


def _checked(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    """tarfile's "data" filter, which also refuses links that point outside; and before it,
    refuse (rather than rewrite, as the filter would) a name that is absolute or goes up
    (`..`), and anything that is not a file, a directory or a link."""
    parts = member.name.split("/")
    if member.name.startswith("/") or ".." in parts:
        raise EnvironmentRefused(f"{member.name!r} is an absolute path or goes up (..)")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise EnvironmentRefused(f"{member.name!r} is a device, a FIFO or another special file")
    return tarfile.data_filter(member, path)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


__all__ = [
    "ENV_DIR_VARIABLE",
    "EnvironmentRefused",
    "EnvironmentUnavailable",
    "Fetched",
    "cache_dir",
    "ensure_environment",
    "unpack",
]
