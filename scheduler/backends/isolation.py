"""The platform's side of sandboxing local instances: what this host allows, each instance's
cgroup, the firewall rules for the instances' uids, and uids per function.

The instance's side (namespaces, mounts, identity, seccomp) is `invoker.sandbox`; the zygote
builds it from the spec made here. Which protections are on is decided once, at start, and
reported (`IsolationReport`): `FN_ISOLATION=strict` refuses to start with any of them off,
`auto` (the default) runs with what the host allows and says what is missing, `off` builds
no walls (benchmarks of the bare path).

Cgroups: v2 (a leaf per instance under a subtree of our own, `cgroup.kill` to stop it) or v1
(the memory, pids and cpu hierarchies, as on hosts with the legacy layout).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.backends import BackendError

log = logging.getLogger("ember.scheduler.isolation")

CGROUP_ROOT = Path("/sys/fs/cgroup")
RUNTIME_MEMORY_BYTES = 64 << 20
"""Added to a function's --memory in its cgroup: the runtime's own pages and its helpers."""
CPU_PERIOD_US = 100_000

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

PRIVATE_V4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
"""Special-purpose IPv4 (RFC 6890): this network, private, shared (CGNAT), loopback,
link-local, protocol assignments, benchmarking, multicast, reserved. (Not the documentation
ranges: never routed on the internet, but some sandboxes put their package mirrors there.)"""
PRIVATE_V6 = (
    "::/127",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/32",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
)
"""Special-purpose IPv6: unspecified and loopback, IPv4-mapped, NAT64 (both prefixes embed
IPv4 addresses), discard, Teredo and 6to4 (which embed IPv4 too), documentation, unique
local, link-local, multicast."""


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


# -- cgroups -----------------------------------------------------------------------------------


def _write(path: Path, value: str) -> None:
    path.write_text(value)


class InstanceCgroup:
    """One instance's cgroup(s): join, limit, kill, remove."""

    def __init__(self, dirs: list[Path], v2: bool) -> None:
        self.dirs = dirs
        self.v2 = v2

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def _file(self, name: str) -> Path | None:
        for d in self.dirs:
            if (d / name).exists():
                return d / name
        return None

    def set_limits(self, *, memory_bytes: int, pids_max: int, cpus: float) -> None:
        quota = max(1000, int(cpus * CPU_PERIOD_US))
        if self.v2:
            for name, value in (
                ("memory.max", str(memory_bytes)),
                ("memory.swap.max", "0"),
                ("pids.max", str(pids_max)),
                ("cpu.max", f"{quota} {CPU_PERIOD_US}"),
            ):
                target = self._file(name)
                if target is not None:
                    _write(target, value)
            return
        for name, value in (
            ("memory.limit_in_bytes", str(memory_bytes)),
            ("memory.memsw.limit_in_bytes", str(memory_bytes)),
            # v1 charges socket buffers only with a TCP limit of their own
            ("memory.kmem.tcp.limit_in_bytes", str(memory_bytes)),
            ("pids.max", str(pids_max)),
            ("cpu.cfs_period_us", str(CPU_PERIOD_US)),
            ("cpu.cfs_quota_us", str(quota)),
        ):
            target = self._file(name)
            if target is None:
                continue
            try:
                _write(target, value)
            except OSError as exc:
                if name == "memory.kmem.tcp.limit_in_bytes":
                    continue  # (kernels without it: nothing to limit)
                # v1 refuses memsw below limit_in_bytes and a lower limit under usage: order
                if exc.errno != errno.EINVAL or not name.startswith("memory."):
                    raise
                if name == "memory.limit_in_bytes":
                    memsw = self._file("memory.memsw.limit_in_bytes")
                    if memsw is not None:
                        _write(memsw, str(memory_bytes))
                    _write(target, value)

    def oom_killed(self) -> bool:
        for name in ("memory.events", "memory.oom_control"):
            target = self._file(name)
            if target is None:
                continue
            with contextlib.suppress(OSError, ValueError):
                for line in target.read_text().splitlines():
                    key, _, count = line.partition(" ")
                    if key == "oom_kill" and int(count) > 0:
                        return True
        return False

    def kill(self) -> None:
        """Kill every process in it (what escaped the process group too)."""
        kill_file = self._file("cgroup.kill")
        if self.v2 and kill_file is not None:
            with contextlib.suppress(OSError):
                _write(kill_file, "1")
                return
        for _ in range(3):
            pids: set[int] = set()
            for procs in self.procs_files:
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(p) for p in Path(procs).read_text().split())
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def release(self, wait_s: float = 2.0) -> None:
        """Kill what is left in it, then remove it once empty (a killed process leaves the
        cgroup only when it has exited; until then the kernel refuses the removal)."""
        self.kill()
        deadline = time.monotonic() + wait_s
        while not self.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.remove()

    def empty(self) -> bool:
        for procs in self.procs_files:
            with contextlib.suppress(OSError):
                if Path(procs).read_text().strip():
                    return False
        return True

    def remove(self) -> None:
        for d in self.dirs:
            with contextlib.suppress(OSError):
                d.rmdir()


class CgroupDriver:
    """Creates instance cgroups under one parent per platform process."""

    def __init__(self, parents: list[Path], v2: bool) -> None:
        self.parents = parents
        self.v2 = v2

    @property
    def version(self) -> str:
        return "v2" if self.v2 else "v1"

    def create(self, instance_id: str) -> InstanceCgroup:
        dirs = []
        for parent in self.parents:
            d = parent / instance_id
            d.mkdir(exist_ok=True)
            dirs.append(d)
        return InstanceCgroup(dirs, self.v2)

    def close(self) -> None:
        for parent in self.parents:
            for child in parent.glob("*"):
                if child.is_dir():
                    InstanceCgroup([child], self.v2).release()
            with contextlib.suppress(OSError):
                parent.rmdir()


def _remove_dead_platform_groups(base: Path) -> None:
    """Groups of platforms killed with SIGKILL: removed when empty and their owner is gone."""
    for group in base.glob("ember-*"):
        owner = group.name.removeprefix("ember-")
        if not owner.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        for child in group.glob("*"):
            if child.is_dir():
                with contextlib.suppress(OSError):
                    child.rmdir()
        with contextlib.suppress(OSError):
            group.rmdir()


def _v2_base(root: Path) -> Path | None:
    """Our own cgroup in a v2 hierarchy that has the memory and pids controllers."""
    controllers = root / "cgroup.controllers"
    if not controllers.exists():
        return None
    if not {"memory", "pids"} <= set(controllers.read_text().split()):
        return None
    try:
        own = next(
            line[3:]
            for line in Path("/proc/self/cgroup").read_text().splitlines()
            if line.startswith("0::")
        )
    except (OSError, StopIteration):
        return None
    return root / own.strip("/")


def _v2_driver(root: Path, platform_id: str) -> CgroupDriver:
    """A subtree for our instances beside our own processes: v2 allows controllers only in
    groups without processes, so ours move to a leaf first when we are not at the root."""
    base = _v2_base(root)
    if base is None:
        raise OSError("no cgroup v2 hierarchy with the memory and pids controllers")
    wanted = [
        c
        for c in ("memory", "pids", "cpu")
        if c in (base / "cgroup.controllers").read_text().split()
    ]
    enable = " ".join(f"+{c}" for c in wanted)
    try:
        _write(base / "cgroup.subtree_control", enable)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        # Our processes (and a service's others) move to a leaf; a process forked meanwhile
        # lands in the base again: a few rounds.
        leaf = base / "ember-platform"
        leaf.mkdir(exist_ok=True)
        for attempt in range(5):
            for pid in (base / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    _write(leaf / "cgroup.procs", pid)
            try:
                _write(base / "cgroup.subtree_control", enable)
                break
            except OSError as again:
                if again.errno != errno.EBUSY or attempt == 4:
                    raise
    _remove_dead_platform_groups(base)
    parent = base / f"ember-{platform_id}"
    parent.mkdir(exist_ok=True)
    _write(parent / "cgroup.subtree_control", enable)
    return CgroupDriver([parent], v2=True)


def _v1_driver(root: Path, platform_id: str) -> CgroupDriver:
    parents = []
    for controller in ("memory", "pids", "cpu"):
        hierarchy = root / controller
        if not (hierarchy / "cgroup.procs").exists():
            if controller == "cpu":
                continue  # optional
            raise OSError(f"no cgroup v1 {controller} hierarchy at {hierarchy}")
        base = hierarchy / "ember"
        base.mkdir(exist_ok=True)
        _remove_dead_platform_groups(base)
        parent = base / f"ember-{platform_id}"
        parent.mkdir(exist_ok=True)
        if controller == "memory":
            with contextlib.suppress(OSError):
                _write(parent / "memory.use_hierarchy", "1")
        parents.append(parent)
    return CgroupDriver(parents, v2=False)


def detect_cgroups(platform_id: str, root: Path = CGROUP_ROOT) -> tuple[CgroupDriver | None, str]:
    """The cgroup driver this host allows us, or None and why not."""
    reasons = []
    for make in (_v2_driver, _v1_driver):
        try:
            return make(root, platform_id), ""
        except OSError as exc:
            reasons.append(str(exc))
    return None, "; ".join(reasons)


# -- uids and the firewall ---------------------------------------------------------------------


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


def _nameservers() -> list[str]:
    servers = []
    with contextlib.suppress(OSError):
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                servers.append(parts[1].split("%")[0])
    return servers


def firewall_rules(uid_first: int, uid_last: int) -> str:
    """nftables rules: the instances' uids reach no address of this host and no private,
    loopback or link-local network; DNS to the configured resolvers stays allowed."""
    table = f"ember_{uid_first}"
    uids = f"{uid_first}-{uid_last}"
    reject = "reject with icmpx admin-prohibited"
    dns = []
    for server in _nameservers():
        family = "ip6" if ":" in server else "ip"
        for proto in ("udp", "tcp"):
            dns.append(f"meta skuid {uids} {family} daddr {server} {proto} dport 53 accept")
    lines = [
        f"table inet {table} {{}}",
        f"delete table inet {table}",
        f"table inet {table} {{",
        "  chain output {",
        "    type filter hook output priority 0; policy accept;",
        *(f"    {rule}" for rule in dns),
        f"    meta skuid {uids} fib daddr type {{ local, broadcast, multicast }} {reject}",
        f"    meta skuid {uids} ip daddr {{ {', '.join(PRIVATE_V4)} }} {reject}",
        f"    meta skuid {uids} ip6 daddr {{ {', '.join(PRIVATE_V6)} }} {reject}",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def install_firewall(uid_first: int, uid_last: int) -> str:
    """Install the rules (idempotent: the table is replaced). '' when done, else why not."""
    nft = shutil.which("nft") or next(
        (p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p)), None
    )
    if nft is None:
        return "the nft command (package nftables) is not installed"
    try:
        result = subprocess.run(
            [nft, "-f", "-"],
            input=firewall_rules(uid_first, uid_last),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nft failed: {exc}"
    if result.returncode != 0:
        return f"nft refused the rules: {result.stderr.strip()[:300]}"
    return ""


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
