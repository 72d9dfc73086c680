"""The files of a built environment: what the build process sees of the platform's environment,
the lock read from pip's report, and packing, checking and unpacking the directory it fills."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from builds.requirements import BuildFailed

log = logging.getLogger("ember.gateway.builds")

# What the build may see of the platform's environment: where to find packages, not secrets.
_BUILD_ENV_KEEP = re.compile(
    r"^(PATH|LANG|LC_[A-Z]+|TZ|PIP_[A-Z_]+|UV_INDEX_URL"
    r"|(HTTPS?|NO|ALL)_PROXY|(https?|no|all)_proxy"
    r"|SSL_CERT_(FILE|DIR)|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE)$"
)


def build_env(home: Path) -> dict[str, str]:
    """pip's environment: package-index settings and proxies pass, nothing else of the
    platform's (no DATABASE_URL, no admin token)."""
    env = {k: v for k, v in os.environ.items() if _BUILD_ENV_KEEP.match(k)}
    env.update(
        HOME=str(home), PYTHONNOUSERSITE="1", PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1"
    )
    return env


def lock_from_report(report: dict[str, Any]) -> str:
    """`name==version --hash=sha256:...` for each package pip installed (its --report)."""
    lines = []
    for item in report.get("install", []):
        meta = item.get("metadata", {})
        line = f"{meta.get('name')}=={meta.get('version')}"
        hashes = (item.get("download_info", {}).get("archive_info") or {}).get("hashes") or {}
        if "sha256" in hashes:
            line += f" --hash=sha256:{hashes['sha256']}"
        lines.append(line)
    return "\n".join(sorted(lines, key=str.lower)) + "\n" if lines else ""


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files below `root` (links not followed; files that vanish while
    it counts, as in a running build, count as nothing)."""
    total = 0
    for path in root.rglob("*"):
        with contextlib.suppress(OSError):
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def pack(root: Path, target: Path) -> int:
    """Write a tar.gz of `root` to `target` (entries in a fixed order); returns its size."""
    with tarfile.open(target, mode="w:gz", compresslevel=3) as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return target.stat().st_size


def freeze(path: Path) -> None:
    """Make an environment read-only: instances of many functions import from it."""
    for item in [path, *path.rglob("*")]:
        if not item.is_symlink():
            item.chmod(item.stat().st_mode & ~0o222)


def install(site: Path, target: Path) -> None:
    """Move a complete directory into the cache (at once, by rename); another gateway sharing
    the cache may have put it there first, which is as good."""
    try:
        site.rename(target)
    except OSError as exc:
        if exc.errno == errno.EXDEV:  # built on a tmpfs (`builds.scratch`): copied, then renamed
            copy = Path(tempfile.mkdtemp(prefix="unpack-", dir=target.parent)) / "site"
            try:
                shutil.copytree(site, copy, symlinks=True)
                install(copy, target)
            finally:
                shutil.rmtree(copy.parent, ignore_errors=True)
            return
        if not target.is_dir():
            raise
        log.debug("environment already cached: %s", exc)
        return
    freeze(target)


def clean(text: str) -> str:
    return text.replace("\x00", "\\0")


MAX_BUILD_OUTPUT_BYTES = 1 << 20
"""Build output kept (its end) for the error message and `fn build-logs`."""
MAX_REPORT_BYTES = 16 << 20


def check_output(site: Path) -> None:
    """What pip installed must be a plain directory (a build may have put a link there, to
    make the platform pack or freeze what it points at)."""
    try:
        mode = os.lstat(site).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        raise BuildFailed(
            "the build left something else than a directory where packages "
            "are installed (a link?): refused",
            "",
        )


def check_entries(site: Path) -> None:
    """What pip installed holds only files, directories and links: a build may have left a
    named pipe, a socket or a device node, which nothing imports and which packing, copying
    and unpacking would trip on."""
    for root, dirs, names in os.walk(site):
        for name in dirs + names:
            mode = os.lstat(os.path.join(root, name)).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                where = os.path.relpath(os.path.join(root, name), site)
                raise BuildFailed(
                    f"the build left {where!r}, which is not a file, a directory or a link: "
                    "refused",
                    "",
                )


def read_report(path: Path) -> bytes:
    """pip's --report, read without following a link or waiting on a pipe the build left."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_REPORT_BYTES:
            return b""
        return f.read(MAX_REPORT_BYTES)


def reclaim(root: Path) -> None:
    """Give what a confined build wrote back to the platform's user."""
    uid, gid = os.getuid(), os.getgid()
    for path in [root, *root.rglob("*")]:
        os.chown(path, uid, gid, follow_symlinks=False)
