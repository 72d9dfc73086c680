"""The filesystem an instance sees (in its own mount namespace): a private /proc, /tmp and
/dev, the platform's directories covered with empty read-only filesystems, and what is bound
back in below them (where Python lives, the operator's exposed directories, later a
function's environment).

Paths to bind back are opened before anything is covered: once covered, the real directory
is reachable only through a descriptor opened earlier (`Covers`).
"""

from __future__ import annotations

import contextlib
import os
import stat

from invoker.linux import (
    COVER_FLAGS,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    mount,
)
from invoker.specs import GenericSpec


def _cover(path: str) -> bool:
    """Mount an empty read-only filesystem over a directory (or /dev/null over a file)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    if stat.S_ISDIR(mode):
        mount("tmpfs", path, "tmpfs", COVER_FLAGS | MS_RDONLY, "size=64k,mode=755")
        return True
    if stat.S_ISREG(mode) or stat.S_ISSOCK(mode):
        mount("/dev/null", path, None, MS_BIND)
    return False


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class Covers:
    """The covered directories of one instance, and a way back in below them."""

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}
        self.covered: dict[str, bool] = {}
        """Covered directory -> whether its covering filesystem is read-only."""

    def bind_back(self, path: str, *, source_fd: int | None = None, writable: bool = False) -> None:
        """Bind `path` (below a covered directory) back in at the same place: from the real
        one below it, or from `source_fd`; read-only unless `writable`."""
        roots = [c for c in self.covered if _under(path, c)]
        if not roots:
            return
        root = max(roots, key=len)
        if source_fd is not None:
            source = f"/proc/self/fd/{source_fd}"
        else:
            holders = [h for h in self.fds if _under(path, h)]
            if not holders:
                return
            holder = max(holders, key=len)
            source = f"/proc/self/fd/{self.fds[holder]}/{path[len(holder.rstrip('/')) + 1 :]}"
        if not os.path.exists(source):
            return
        read_only = self.covered[root]
        if read_only:
            mount(None, root, None, MS_REMOUNT | COVER_FLAGS)  # for the mount point
        try:
            if os.path.isdir(source):
                os.makedirs(path, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o444))
            mount(source, path, None, MS_BIND | MS_REC)
            mount(
                None,
                path,
                None,
                MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | (0 if writable else MS_RDONLY),
            )
        finally:
            if read_only:
                mount(None, root, None, MS_REMOUNT | COVER_FLAGS | MS_RDONLY)

    def keep_only(self, paths: list[str]) -> None:
        """Close the descriptors no later `bind_back` of `paths` needs."""
        for root, fd in list(self.fds.items()):
            if not any(_under(p, root) for p in paths):
                os.close(fd)
                del self.fds[root]

    def close(self) -> None:
        self.keep_only([])


_PRIVATE_DIRS = ("/tmp", "/dev/shm", "/var/tmp")
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_DEVICE_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "ptmx": "pts/ptmx",
}


def _build_dev(size: int) -> None:
    """A /dev of its own: the harmless devices, its own pseudo-terminals (not the host's:
    opening many cannot exhaust them for ssh), a private /dev/shm; read-only otherwise."""
    host = os.open("/dev", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
        for name in _DEVICES:
            source = f"/proc/self/fd/{host}/{name}"
            if not os.path.exists(source):
                continue
            os.close(os.open(f"/dev/{name}", os.O_CREAT | os.O_WRONLY, 0o666))
            mount(source, f"/dev/{name}", None, MS_BIND)
        for name, target in _DEVICE_LINKS.items():
            os.symlink(target, f"/dev/{name}")
        os.mkdir("/dev/pts", 0o755)
        mount(
            "devpts",
            "/dev/pts",
            "devpts",
            MS_NOSUID | MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,max=64",
        )
        os.mkdir("/dev/shm", 0o1777)
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=1777")
        mount(None, "/dev", None, MS_REMOUNT | MS_NOSUID | MS_NOEXEC | MS_RDONLY)
    finally:
        os.close(host)


def build_mounts(spec: GenericSpec) -> Covers:
    """In init, in the new mount namespace: private /proc, /tmp, /dev/shm, covered paths,
    then what is bound back in (Python, read-only; exposed directories, writable)."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    covers = Covers()
    hide = [
        p for p in spec.get("hide", []) if not any(_under(p, t) for t in _PRIVATE_DIRS)
    ]  # private anyway
    for path in [*hide, *spec.get("hide_last", []), *spec.get("reveal_later", [])]:
        with contextlib.suppress(OSError):
            covers.fds[path] = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    exposed: dict[str, int] = {}
    for path in spec.get("expose", []):
        with contextlib.suppress(OSError):
            exposed[path] = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    revealed: dict[str, int] = {}  # (opened now: they may lie below /tmp, made private next)
    for path in spec.get("reveal", []):
        with contextlib.suppress(OSError):
            revealed[path] = os.open(path, os.O_PATH | os.O_CLOEXEC)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    size = int(spec.get("tmp_bytes", 64 << 20))
    _build_dev(size)
    covers.covered["/dev/shm"] = False
    for path in ("/tmp", "/var/tmp"):
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=1777")
            covers.covered[path] = False
    for path in sorted(hide):
        if not any(_under(path, c) for c in covers.covered) and _cover(path):
            covers.covered[path] = True
    for path, fd in revealed.items():
        covers.bind_back(path, source_fd=fd)
        os.close(fd)
    for path in spec.get("hide_last", []):
        if not any(_under(path, t) for t in _PRIVATE_DIRS) and _cover(path):
            covers.covered[path] = True
    for path, fd in exposed.items():  # the operator's (or a build's) choice comes last
        covers.bind_back(path, source_fd=fd, writable=True)
        os.close(fd)
    covers.keep_only(spec.get("reveal_later", []))
    return covers
