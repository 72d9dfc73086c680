"""Each local instance's cgroup: memory, pids and CPU limits, the OOM verdict, kill and removal.

v2: a leaf per instance under a subtree of our own (`cgroup.kill` to stop it); v1: the memory,
pids and cpu hierarchies, as on hosts with the legacy layout. One parent group per platform
process (`ember-<pid>`); the groups of platforms killed with SIGKILL are removed by the next.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger("ember.scheduler.cgroups")

CGROUP_ROOT = Path("/sys/fs/cgroup")
RUNTIME_MEMORY_BYTES = 64 << 20
"""Added to a function's --memory in its cgroup: the runtime's own pages and its helpers."""
CPU_PERIOD_US = 100_000


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def node_pids_max(proc: Path = Path("/proc/sys/kernel")) -> int:
    """Tasks all of a platform's instances (and builds) may have together: half of what the
    host has (`kernel.pid_max`, `kernel.threads-max`), at least 4,096. Each instance's own
    limit (FN_INSTANCE_PIDS) times the instances a node may hold is far more than the host
    has; this keeps the other half for the platform, its database and the host."""
    limits = []
    for name in ("pid_max", "threads-max"):
        with contextlib.suppress(OSError, ValueError):
            limits.append(int((proc / name).read_text()))
    return max(4096, min(limits, default=1 << 22) // 2)


def _cap_node_pids(parent: Path) -> None:
    """`node_pids_max` on the platform's parent group (of the pids controller)."""
    try:
        _write(parent / "pids.max", str(node_pids_max()))
    except OSError as exc:  # (a host that refuses it keeps the per-instance limits)
        log.warning("no node-wide task limit on %s: %s", parent, exc)


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

    def memory_bytes(self) -> int:
        """The memory charged to it now (0 if unknown)."""
        for name in ("memory.current", "memory.usage_in_bytes"):
            target = self._file(name)
            if target is not None:
                with contextlib.suppress(OSError, ValueError):
                    return int(target.read_text())
        return 0

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
    if "pids" in wanted:
        _cap_node_pids(parent)
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
        if controller == "pids":
            _cap_node_pids(parent)
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
