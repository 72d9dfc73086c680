"""A build's work directory on a filesystem of its own size: a tmpfs mounted there (root only).

What a build writes is bounded by the filesystem, not by a count of the files it leaves: a file
deleted while still open, or a million empty ones, fill the tmpfs (and the build's memory,
which its cgroup bounds), never the host's disk that Postgres and every function share.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from pathlib import Path

log = logging.getLogger("ember.gateway.builds")

MS_NOSUID, MS_NODEV = 2, 4
MNT_DETACH = 2
BYTES_PER_INODE = 4096
"""Inodes the tmpfs has: one per 4 KiB of its size (a build of numpy, scipy and pandas
leaves about 10,000 files; twice the default FN_MAX_ENV allows 524,288)."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def mount_scratch(path: Path, size_bytes: int) -> bool:
    """Mount a tmpfs of `size_bytes` at `path` (an empty directory); False where this process
    may not mount (not root), and the directory stays as it is."""
    options = f"size={size_bytes},nr_inodes={max(1 << 16, size_bytes // BYTES_PER_INODE)}"
    result = _libc().mount(
        b"tmpfs",
        os.fsencode(path),
        b"tmpfs",
        ctypes.c_ulong(MS_NOSUID | MS_NODEV),
        f"{options},mode=0700".encode(),
    )
    if result != 0:
        code = ctypes.get_errno()
        (log.debug if code == errno.EPERM else log.warning)(
            "build work directory not size-limited: mount: %s", os.strerror(code)
        )
        return False
    return True


def unmount_scratch(path: Path) -> None:
    """Detach the tmpfs at `path` (what is still open in it goes when it is closed)."""
    if _libc().umount2(os.fsencode(path), MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):  # (not a mount point: nothing to do)
            log.warning("build work directory %s not unmounted: %s", path, os.strerror(code))


def full(path: Path) -> bool:
    """Whether the filesystem at `path` has (almost) no room or no inode left."""
    try:
        info = os.statvfs(path)
    except OSError:
        return False
    return info.f_bavail * info.f_frsize < 1 << 20 or info.f_favail == 0
