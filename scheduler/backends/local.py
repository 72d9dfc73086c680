"""The local backend: invoker instances are processes on this machine.

By default instances are forked by a zygote (`python -m invoker --zygote`) that has imported the
runtime once: a start costs a fork (~2 ms) and shares the runtime's memory
(`scheduler.backends.zygote` speaks to it). With `zygote=False` each instance is a fresh
`python -m invoker` (~100 ms), the baseline the benchmark compares with.

Every process starts with a scrubbed environment (no database URL, no token: user code never
sees platform credentials), and nothing outlives the platform: the zygote and spawned instances
exit when their stdin (a pipe from us) closes, forked instances die with the zygote.

Forked instances are sandboxed (`scheduler.backends.isolation` decides what this host allows,
`invoker.sandbox` builds it): each has its own cgroup, namespaces, and at specialization the
function's uid, a seccomp filter and its network mode. Spawned instances (`zygote=False`, a
benchmark baseline) are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from invoker.specs import SpecializeSpec
from scheduler.backends import BackendError, InstanceHandle, describe_exit
from scheduler.backends.cgroups import (
    RUNTIME_MEMORY_BYTES,
    CgroupDriver,
    InstanceCgroup,
    detect_cgroups,
)
from scheduler.backends.code_dirs import remove_code_dirs, remove_dirs_of_dead_platforms
from scheduler.backends.env_zygotes import EnvZygotes
from scheduler.backends.firewall import install_firewall
from scheduler.backends.isolation import (
    IsolationError,
    IsolationReport,
    IsolationSettings,
    UidAllocator,
    hidden_paths,
)
from scheduler.backends.template_host import KeepsTemplates
from scheduler.backends.templates import MAX_TEMPLATES, Templates
from scheduler.backends.zygote import ForkedHandle, Zygote, first_line
from store.records import Version

log = logging.getLogger("ember.scheduler.local")

BUILD_TMP_BYTES = 2 << 30
"""A build's private /tmp (tmpfs: only what it writes counts, in its memory)."""
BUILD_MEMORY_BYTES = 4 << 30
"""A build's memory, /tmp included."""

# Only what a Python process needs to run; everything else of the platform's environment
# (DATABASE_URL, FN_TOKEN, cloud credentials...) stays out of user code's reach.
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH")


def invoker_env(tmp_dir: str | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    if tmp_dir is not None:
        env["TMPDIR"] = tmp_dir  # instances put their code here: removed with them
    env["MALLOC_ARENA_MAX"] = "2"
    # No io_uring for libuv's (uvloop's) file operations either: instances deny it.
    env["UV_USE_IO_URING"] = "0"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["HOME"] = "/tmp"
    return env


def _exited(handle: ForkedHandle | LocalHandle) -> bool:
    if isinstance(handle, LocalHandle):
        return handle.process.returncode is not None
    return handle.exited.done()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@dataclass(slots=True, eq=False)
class LocalHandle:
    """An instance we spawned ourselves: we are its parent."""

    host: str
    port: int
    process: asyncio.subprocess.Process

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait(self) -> int | None:
        return await self.process.wait()


class LocalBackend(KeepsTemplates):
    def __init__(
        self,
        *,
        zygote: bool = True,
        unix_sockets: bool = True,
        start_timeout_s: float = 10.0,
        python: str = sys.executable,
        isolation: IsolationSettings | None = None,
        private_paths: tuple[Path, ...] = (),
        environments: Path | None = None,
        templates: bool = True,
        max_templates: int = MAX_TEMPLATES,
    ) -> None:
        """`private_paths`: the platform's directories instances must not see (state dir);
        `environments`: the cache of built environments, bound into the instances that use
        one (read-only)."""
        self.use_zygote = zygote
        self.isolation = isolation or IsolationSettings()
        self.report = IsolationReport()
        self._private_paths = [os.path.realpath(p) for p in private_paths]
        self._environments = os.path.realpath(environments) if environments is not None else None
        self._cgroups: CgroupDriver | None = None
        self._uids = UidAllocator(self.isolation.uid_first, self.isolation.uid_count)
        self._generic_spec: dict[str, Any] = {}
        self._seccomp = False
        self._root = os.geteuid() == 0
        # Instances listen on Unix sockets in a directory only we can enter (mode 0700):
        # cheaper than TCP over loopback, and no other local user can reach user code.
        if unix_sockets:
            remove_dirs_of_dead_platforms()
        self._socket_dir = (
            tempfile.mkdtemp(prefix=f"ember-{os.getpid()}-") if unix_sockets else None
        )
        self.start_timeout_s = start_timeout_s
        self.python = python
        self._handles: set[InstanceHandle] = set()
        self._zygote: Zygote | None = None
        self._zygote_broken: str | None = None
        self._zygote_lock = asyncio.Lock()
        self.templates = (
            Templates(self, self._socket_dir, max_templates)
            if self._socket_dir and zygote and templates
            else None
        )
        """Versions' templates (`scheduler.backends.templates`): forked, not imported."""
        self.env_zygotes = (
            EnvZygotes(self._socket_dir, self._ensure_zygote, self.fork_generic)
            if zygote and self._socket_dir
            else None
        )
        """Zygotes of trusted environments (`scheduler.backends.env_zygotes`)."""

    @property
    def zygote_pid(self) -> int | None:
        return self._zygote.process.pid if self._zygote is not None else None

    @property
    def zygote_failure(self) -> str | None:
        """Why the zygote cannot fork now (its pipe was tampered with; replaced at the next
        start of an instance)."""
        return self._zygote.broken if self._zygote is not None else None

    @property
    def incidents(self) -> list[str]:
        """What went wrong with the zygote since start (the last one)."""
        return [self._zygote_broken] if self._zygote_broken else []

    async def start(self) -> None:
        if self._environments is not None:  # instances keep a way into it from their start
            os.makedirs(self._environments, mode=0o700, exist_ok=True)
        capabilities: dict[str, Any] = {}
        if self.use_zygote:
            capabilities = (await self._ensure_zygote()).capabilities
        self.report = await asyncio.to_thread(self._decide, capabilities)
        log.info(self.report.summary(), extra=self.report.as_json())
        if self.isolation.mode == "strict" and self.report.off:
            raise IsolationError(f"FN_ISOLATION=strict, but {self.report.summary()}")

    def _decide(self, caps: dict[str, Any]) -> IsolationReport:
        """Which protections to use, from what the zygote found and what we can set up."""
        report = IsolationReport()
        names = ("namespaces", "uid", "seccomp", "cgroups", "network")
        if self.isolation.mode == "off" or not self.use_zygote:
            why = (
                "FN_ISOLATION=off"
                if self.isolation.mode == "off"
                else "FN_ZYGOTE=0: spawned instances are not sandboxed"
            )
            report.off = dict.fromkeys(names, why)
            return report
        why = caps.get("why", {})
        namespaces = bool(caps.get("namespaces"))
        if namespaces:
            report.on["namespaces"] = "mount, PID, IPC, UTS" + (
                " in a user namespace" if caps.get("userns") else ""
            )
        else:
            report.off["namespaces"] = why.get("namespaces", "not available")
        if self._root and namespaces:
            report.on["uid"] = (
                f"uids {self.isolation.uid_first}-"
                f"{self.isolation.uid_first + self.isolation.uid_count - 1}"
            )
        elif self._root:
            report.off["uid"] = "needs the namespaces (the code and sockets are root's)"
        else:
            report.off["uid"] = "not root: instances run as the platform's user"
        self._seccomp = bool(caps.get("seccomp"))
        if self._seccomp:
            report.on["seccomp"] = "denies ptrace, process_vm_*, pidfd_getfd, mount, ..."
        else:
            report.off["seccomp"] = why.get("seccomp", "not available")
        if self._root:
            self._cgroups, reason = detect_cgroups(str(os.getpid()))
        else:
            reason = "not root: no cgroup of our own to delegate"
        if self._cgroups is not None:
            report.on["cgroups"] = f"cgroup {self._cgroups.version}: memory, pids, cpu"
        else:
            report.off["cgroups"] = reason
        if self._root:
            reason = install_firewall(
                self.isolation.uid_first, self.isolation.uid_first + self.isolation.uid_count - 1
            )
        else:
            reason = "not root: cannot install firewall rules"
        if not reason and "uid" in report.on:
            report.on["network"] = "instances' uids reach no loopback or private address"
        else:
            report.off["network"] = reason or "needs a uid per function"
        hide, reveal, hide_last = hidden_paths(
            self.isolation,
            [*self._private_paths, *([self._socket_dir] if self._socket_dir else [])],
        )
        self._generic_spec = (
            {
                "namespaces": namespaces,
                "userns": bool(caps.get("userns")),
                "tmp_bytes": self.isolation.tmp_bytes,
                "hide": hide,
                "reveal": reveal,
                "hide_last": hide_last,
                "reveal_later": [self._environments] if self._environments else [],
                "expose": [os.path.realpath(p) for p in self.isolation.expose],
                "nofile": self.isolation.nofile,
            }
            if namespaces
            else {"nofile": self.isolation.nofile}
        )
        return report

    @property
    def build_uid(self) -> int:
        """The uid requirements builds run as: the last of the range (never a function's)."""
        return self.isolation.uid_first + self.isolation.uid_count - 1

    def confine_command(self, writable: list[Path], name: str) -> list[str]:
        """The command prefix that runs a requirements build inside walls like an instance's
        (`writable`: its work directories, handed to the build's uid); [] when this host
        gives no such walls (not root, or isolation off: the report says so)."""
        if not {"namespaces", "uid"} <= set(self.report.on):
            return []
        for root in writable:
            for path in [root, *root.rglob("*")]:
                os.chown(path, self.build_uid, self.build_uid, follow_symlinks=False)
        spec: dict[str, Any] = {
            **self._generic_spec,
            "tmp_bytes": BUILD_TMP_BYTES,
            "reveal_later": [],
            "expose": [os.path.realpath(p) for p in writable],
            "uid": self.build_uid,
            "gid": self.build_uid,
            "cwd": os.path.realpath(writable[0]),
        }
        if self._cgroups is not None:
            cgroup = self._cgroups.create(f"build-{name}")
            cgroup.set_limits(memory_bytes=BUILD_MEMORY_BYTES, pids_max=1024, cpus=1.0)
            spec["cgroup_procs"] = cgroup.procs_files
        return [self.python, "-P", "-m", "invoker", "--confine", orjson.dumps(spec).decode(), "--"]

    def release_build(self, name: str) -> None:
        """Remove a finished build's cgroup (what is left in it is killed)."""
        if self._cgroups is not None:
            self._cgroups.create(f"build-{name}").release()

    def instance_spec(self, handle: InstanceHandle, version: Version) -> SpecializeSpec:
        """Fit the instance's limits to `version` and say what the invoker must close around
        it before importing the code (its uid, network, seccomp)."""
        if not isinstance(handle, ForkedHandle) or self.isolation.mode == "off":
            return {}
        c = version.config
        handle.memory_bytes = c.memory_bytes
        if handle.cgroup is not None:
            handle.cgroup.set_limits(
                memory_bytes=c.memory_bytes + RUNTIME_MEMORY_BYTES,
                pids_max=self.isolation.pids_max,
                cpus=c.cpus,
            )
        spec: SpecializeSpec = {"network": c.network, "seccomp": self._seccomp}
        if c.network == "none" and "namespaces" not in self.report.on:
            raise BackendError(
                "--network none needs network namespaces, which this host "
                f"does not allow ({self.report.off['namespaces']})"
            )
        if "uid" in self.report.on:
            uid = self._uids.uid_of(version.function)
            spec["uid"] = spec["gid"] = uid
        return spec

    async def start_instance(
        self, instance_id: str, version: Version | None = None
    ) -> InstanceHandle:
        handle: InstanceHandle
        if self.templates is not None:  # (templates are made in between)
            self.templates.started()
        try:
            async with asyncio.timeout(self.start_timeout_s):
                address = (
                    "127.0.0.1"
                    if self._socket_dir is None
                    else f"unix:{self._socket_dir}/{instance_id}.sock"
                )
                template = version and self.templates and self.templates.get(version)
                if template and self.templates:
                    with contextlib.suppress(BackendError):  # (else: a generic instance)
                        handle = await self.templates.fork_instance(template, instance_id, address)
                        self._handles.add(handle)
                        return handle
                if self.use_zygote:  # (of its trusted environment's zygote, if it has one)
                    envs, env = self.env_zygotes, version and version.package.env_hash
                    handle = (envs and env and await envs.start(env, instance_id, address)) or (
                        await self.fork_generic(await self._ensure_zygote(), instance_id, address)
                    )
                else:
                    handle = await self._spawn(instance_id, address)
        except TimeoutError:
            raise BackendError(
                f"invoker {instance_id} did not start within {self.start_timeout_s:g}s"
            ) from None
        self._handles.add(handle)
        return handle

    def new_cgroup(self, instance_id: str, version: Version | None = None) -> InstanceCgroup | None:
        c = version and version.config  # (a template's fork runs: its version's limits at once)
        if self._cgroups is None:
            return None
        try:
            cgroup = self._cgroups.create(instance_id)
            cgroup.set_limits(
                memory_bytes=(c.memory_bytes if c else 256 << 20) + RUNTIME_MEMORY_BYTES,
                pids_max=self.isolation.pids_max,
                cpus=c.cpus if c else 1.0,
            )
        except OSError as exc:
            raise BackendError(
                f"cannot create the cgroup of instance {instance_id}: {exc}"
            ) from exc
        return cgroup

    async def fork_generic(self, zygote: Zygote, instance_id: str, address: str) -> ForkedHandle:
        """A generic instance, walled in, forked by `zygote` (the runtime's, or a trusted
        environment's: `scheduler.backends.env_zygotes`)."""
        cgroup = self.new_cgroup(instance_id)
        spec = dict(self._generic_spec)
        if cgroup is not None:
            spec["cgroup_procs"] = cgroup.procs_files
        try:
            handle = await zygote.fork(address, spec)
        except BaseException:
            if cgroup is not None:  # (removed once empty, off the event loop)
                cgroup.kill()
                asyncio.get_running_loop().run_in_executor(None, cgroup.release)
            raise
        handle.cgroup = cgroup
        return handle

    async def _ensure_zygote(self) -> Zygote:
        async with self._zygote_lock:
            if self._zygote is not None and self._zygote.alive:
                return self._zygote
            if self._zygote is not None:
                self._zygote_broken = self._zygote.broken or self._zygote_broken
                if self._zygote.broken is not None:
                    await self._zygote.close()
                log.warning(
                    "the zygote is gone; starting a new one", extra={"reason": self._zygote.broken}
                )
            process = await self._start_process("--zygote")
            self._zygote = await Zygote.ready(process)
            log.info("zygote started", extra={"pid": process.pid})
            return self._zygote

    async def _start_process(self, *args: str) -> asyncio.subprocess.Process:
        try:
            return await asyncio.create_subprocess_exec(
                # -P: the working directory is not on sys.path (nor, then, in instances' view)
                self.python,
                "-P",
                "-m",
                "invoker",
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=invoker_env(self._socket_dir),
                start_new_session=True,
            )
        except OSError as exc:
            raise BackendError(f"cannot start an invoker process: {exc}") from exc

    async def _spawn(self, instance_id: str, address: str) -> LocalHandle:
        process = await self._start_process("--host", address, "--port", "0", "--exit-with-stdin")
        line = await first_line(process)
        if not line.strip().isdigit():
            code = await process.wait()
            raise BackendError(f"invoker {instance_id} failed to start ({describe_exit(code)})")
        return LocalHandle(host=address, port=int(line), process=process)

    async def relabel_instance(self, handle: InstanceHandle, version: Version) -> None:
        """Nothing outside the process names its version."""

    async def stop_instance(self, handle: InstanceHandle, *, grace_s: float = 2.0) -> None:
        try:
            await self._stop(handle, grace_s)
        except BaseException:
            raise  # still in _handles: close() stops it
        else:
            self._handles.discard(handle)
        finally:
            if handle.host.startswith("unix:"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(handle.host[len("unix:") :])
            pid = handle.pid if isinstance(handle, ForkedHandle | LocalHandle) else None
            if self._socket_dir is not None and pid is not None:
                remove_code_dirs(self._socket_dir, pid)
            if isinstance(handle, ForkedHandle) and handle.cgroup is not None:
                # What left the process group and the namespace's init; off the event loop
                # (removing a memory cgroup can take a while).
                await asyncio.to_thread(handle.cgroup.release)

    async def _stop(self, handle: InstanceHandle, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after `grace_s`, to the instance's whole process group: what
        a handler forked goes with it (unless it left the group on purpose)."""
        assert isinstance(handle, ForkedHandle | LocalHandle)
        if not _exited(handle):
            _signal_group(handle.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(grace_s):
                    await handle.wait()
            except TimeoutError:
                _signal_group(handle.pid, signal.SIGKILL)
                try:
                    async with asyncio.timeout(5.0):
                        await handle.wait()
                except TimeoutError:
                    log.error("instance did not exit after SIGKILL", extra={"pid": handle.pid})
        _signal_group(handle.pid, signal.SIGKILL)  # what the handler left running
        if isinstance(handle, LocalHandle):
            # Close its pipes (reading stdout to EOF closes that one): an open pipe transport
            # would be left for the event loop to warn about and clean up at close.
            if handle.process.stdin is not None:
                handle.process.stdin.close()
            if handle.process.stdout is not None:
                with contextlib.suppress(TimeoutError, OSError):
                    async with asyncio.timeout(1.0):
                        await handle.process.stdout.read()

    async def close(self) -> None:
        if self.templates is not None:
            await self.templates.close()
        await asyncio.gather(*(self.stop_instance(h, grace_s=1.0) for h in list(self._handles)))
        if self.env_zygotes is not None:  # (after their instances: they die with it)
            await self.env_zygotes.close()
        if self._zygote is not None:
            await self._zygote.close()
            self._zygote = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        if self._cgroups is not None:
            await asyncio.to_thread(self._cgroups.close)
