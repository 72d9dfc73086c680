"""The platform's side of sandboxing local instances: what this host allows, uids per function,
and which paths instances see.

The instance's side (namespaces, mounts, identity, seccomp) is `invoker.sandbox`; the zygote
builds it from the spec made here. Which protections are on is decided once, at start, and
reported (`IsolationReport`): `FN_ISOLATION=strict` refuses to start with any of them off,
`auto` (the default) runs with what the host allows and says what is missing, `off` builds
no walls (benchmarks of the bare path).

Each instance's cgroup is `scheduler.backends.cgroups`, the firewall rules
`scheduler.backends.firewall`; here: the settings, the report, a uid per function and what an
instance may see.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from scheduler.backends import BackendError

log = logging.getLogger("ember.scheduler.isolation")

PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
"""Made private (empty tmpfs) in every instance."""

HIDDEN_PATHS = (
    "/root",
    "/home",
    "/run",
    "/var/lib",
    "/var/log",
    "/var/spool",
    "/var/mail",
    "/var/cache",
    "/var/backups",
    "/sys/fs/cgroup",
    "/boot",
    "/mnt",
    "/media",
    "/srv",
    "/etc/ember",
    "/etc/ssl/private",
)
"""Covered in every instance unless Python itself lives below (then all but its path)."""


class IsolationError(BackendError):
    """A protection that strict isolation requires is not available."""


@dataclass(slots=True, frozen=True, kw_only=True)
class IsolationSettings:
    """How local instances are walled in (docs/security.md)."""

    mode: str = "auto"
    """`auto`: every protection the host allows, the rest reported; `strict`: refuse to
    start without all of them; `off`: none (FN_ISOLATION)."""
    uid_first: int = 1_500_000_000
    """First uid (and gid) given to functions (FN_UID_RANGE, default 1500000000-1500065535:
    above the ranges useradd gives out in /etc/subuid, and below 2^31)."""
    uid_count: int = 65_536
    tmp_bytes: int = 128 << 20
    """Size of each instance's private /tmp and /dev/shm (FN_INSTANCE_TMP); what is written
    there (the function's code too) counts in its memory. Above the largest code a deploy
    accepts unpacked (100 MiB)."""
    pids_max: int = 256
    """Processes and threads per instance (FN_INSTANCE_PIDS)."""
    nofile: int = 1024
    """Open files per process of an instance (FN_INSTANCE_NOFILE)."""
    hide: tuple[str, ...] = ()
    """More directories to cover in instances (FN_HIDE, colon-separated)."""
    expose: tuple[str, ...] = ()
    """Host directories every instance may read and write, at the same path (FN_EXPOSE,
    colon-separated; default none): outside the sandbox's protection by choice."""


@dataclass(slots=True)
class IsolationReport:
    """Which protections are on, and why the others are off."""

    on: dict[str, str] = field(default_factory=dict)
    off: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"protections_on": sorted(self.on), "protections_off": dict(self.off)}

    def summary(self) -> str:
        if not self.off:
            return "isolation: all protections on (" + ", ".join(sorted(self.on)) + ")"
        missing = "; ".join(f"{name}: {why}" for name, why in sorted(self.off.items()))
        return f"isolation: OFF for {missing}"


# -- uids --------------------------------------------------------------------------------------


class UidAllocator:
    """One uid per function, from a range, for the life of this platform process."""

    def __init__(self, first: int, count: int) -> None:
        self.first, self.count = first, count
        self._by_function: dict[str, int] = {}

    def uid_of(self, function: str) -> int:
        """(The last uid of the range is the builds'.)"""
        uid = self._by_function.get(function)
        if uid is None:
            used = len(self._by_function)
            uid = self.first + used % max(1, self.count - 1)
            if used >= self.count:
                log.warning(
                    "uid range exhausted: functions share uids", extra={"range": self.count}
                )
            self._by_function[function] = uid
        return uid


# -- what an instance may see ------------------------------------------------------------------


def _needed_paths() -> list[str]:
    """Where this Python lives (interpreter, standard library, installed packages): bound
    back into instances read-only. Never `sys.path` as such: it can hold the directory the
    platform was started from (`/` under systemd)."""
    import sysconfig

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        with contextlib.suppress(KeyError):
            paths.add(sysconfig.get_paths()[name])
    real = {os.path.realpath(p) for p in paths if p and os.path.isdir(p)}
    return sorted(p for p in real if p != "/")


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def cover_plan(candidates: list[str], needed: list[str]) -> tuple[list[str], list[str]]:
    """(directories to cover, paths to bind back in read-only): `candidates` are hidden, but
    what Python needs below one of them is bound back (through directories anyone may cross,
    even where the real ones are 0700, such as /root). Symbolic links count as their target
    (/home -> /var/home)."""
    hide = sorted({os.path.realpath(c) for c in candidates if os.path.exists(c)})
    hide = [h for h in hide if h != "/" and not any(_under(h, n) for n in needed)]
    reveal = sorted({n for n in needed if any(_under(n, h) for h in hide)})
    reveal = [r for r in reveal if not any(r != o and _under(r, o) for o in reveal)]
    return hide, reveal


def hidden_paths(
    settings: IsolationSettings, private: list[str]
) -> tuple[list[str], list[str], list[str]]:
    """What instances must not see: the usual places and the settings' extra ones; what to
    bind back (Python, and the resolver configuration when it lives under /run); and the
    platform's own directories (`private`: state dir, socket dir), covered last, whatever was
    bound back around them."""
    needed = _needed_paths()
    hide, reveal = cover_plan([*HIDDEN_PATHS, *settings.hide], needed)
    # Instances get /tmp, /var/tmp and /dev/shm of their own: Python living there (a virtual
    # environment in /tmp) is bound back in as well.
    reveal += [
        n
        for n in needed
        if any(_under(n, t) for t in PRIVATE_DIRS) and not any(_under(n, r) for r in reveal)
    ]
    resolv = os.path.realpath("/etc/resolv.conf")
    if resolv != "/etc/resolv.conf" and any(_under(resolv, h) for h in hide):
        reveal.append(resolv)  # systemd-resolved, resolvconf: a link into /run
    last = sorted({os.path.realpath(p) for p in private if os.path.exists(p)})
    return hide, reveal, last
