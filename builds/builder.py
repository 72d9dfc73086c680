"""Environments for functions with dependencies: built once per set of requirements.

A deploy with requirements asks `Builder.ensure`. The requirements are normalized and hashed
(with the Python version and platform); an environment with that hash is reused as it is, by
any function. Otherwise pip installs them into a fresh directory (`pip install --target`), in a
process of its own with no platform credentials in its environment and a time limit. The
directory is packed (tar.gz), stored in Postgres in chunks (`Store.put_environment`), and kept
unpacked in this node's cache, where instances import from it. Another node unpacks it from
Postgres the first time one of its instances needs it (`Builder.local_path`).

The lock (`name==version --hash=sha256:...` per installed package, from pip's `--report`) is
kept with the environment and with every version that uses it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson

from builds.archives import Archives
from builds.packing import (
    MAX_BUILD_OUTPUT_BYTES,
    build_env,
    check_entries,
    check_output,
    clean,
    install,
    lock_from_report,
    pack,
    read_report,
    reclaim,
    tree_bytes,
)
from builds.requirements import (
    PYTHON,
    BuildFailed,
    environment_hash,
    normalize_requirements,
)
from builds.scratch import full, mount_scratch, unmount_scratch
from store import Environment, Store

log = logging.getLogger("ember.gateway.builds")


Confine = Callable[[list[Path], str], list[str]]


class Builder:
    def __init__(
        self,
        store: Store,
        cache_dir: Path,
        *,
        timeout_s: float = 600.0,
        max_env_bytes: int = 1 << 30,
    ) -> None:
        self.confine: Confine | None = None
        """Command prefix that walls a build in (its writable directories, a name), set by
        the platform from its backend; None: builds run as the platform's user."""
        self.release_confined: Callable[[str], None] | None = None
        self._store = store
        self.cache_dir = cache_dir
        self.timeout_s = timeout_s
        self.max_env_bytes = max_env_bytes
        self._building: dict[str, asyncio.Future[Environment]] = {}
        self._unpacking: dict[str, asyncio.Future[Path]] = {}
        self._one_build = asyncio.Semaphore(1)  # builds compete with calls for the CPU
        self.archives = Archives(store, cache_dir / "archives")
        """The packed environments, served to invoker pods (Kubernetes)."""

    def remove_leftovers(self) -> None:
        """Delete what builds and unpacks cut short (a crash) left in the cache."""
        if self.cache_dir.is_dir():
            for path in self.cache_dir.glob("*-*"):
                if path.name.startswith(("build-", "unpack-", "pack-")):
                    if path.is_mount():
                        unmount_scratch(path)
                    shutil.rmtree(path, ignore_errors=True)
        self.archives.remove_leftovers()

    async def ensure(self, function: str, requirements: str) -> Environment:
        """The environment for `requirements`: found, or built now. Every call is recorded as
        a build of `function` (`cached`, `succeeded` or `failed` with pip's output).
        Raises RequirementsError, or BuildFailed."""
        normalized = normalize_requirements(requirements)
        env_hash = environment_hash(normalized)
        t0 = time.perf_counter()
        try:
            found = await self._store.get_environment(env_hash)
            if found is not None:
                await self._store.record_build(
                    function,
                    env_hash,
                    "cached",
                    f"reused environment {env_hash[:12]}\n" + found.lock,
                    0.0,
                )
                return found
            building = self._building.get(env_hash)
            if building is not None:  # one build per hash at a time on this gateway
                env = await asyncio.shield(building)
                await self._store.record_build(
                    function,
                    env_hash,
                    "cached",
                    f"built meanwhile for another deploy: {env_hash[:12]}\n{env.lock}",
                    time.perf_counter() - t0,
                )
                return env
            building = asyncio.get_running_loop().create_future()
            self._building[env_hash] = building
            try:
                env, output = await self._build(normalized, env_hash)
            except BaseException as exc:
                building.set_exception(exc)
                building.exception()  # retrieved: nobody else may be waiting
                raise
            finally:
                self._building.pop(env_hash, None)
            building.set_result(env)
            await self._store.record_build(
                function, env_hash, "succeeded", clean(output), env.build_s
            )
            return env
        except BuildFailed as exc:
            await self._record_failure(function, env_hash, exc.log or str(exc), t0)
            raise
        except Exception as exc:
            await self._record_failure(function, env_hash, f"the build failed: {exc!r}", t0)
            raise

    async def _record_failure(self, function: str, env_hash: str, text: str, t0: float) -> None:
        try:
            await self._store.record_build(
                function, env_hash, "failed", clean(text), time.perf_counter() - t0
            )
        except Exception:
            log.exception("could not record a failed build", extra={"function": function})

    async def _build(self, normalized: str, env_hash: str) -> tuple[Environment, str]:
        self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        work = Path(tempfile.mkdtemp(prefix="build-", dir=self.cache_dir))
        # A walled-in build writes only on a tmpfs of twice FN_MAX_ENV (`builds.scratch`),
        # pip's home and working directory included; else they are outside the state.
        limited = self.confine is not None and mount_scratch(work, 2 * self.max_env_bytes)
        home = work / "home"
        packed: Path | None = None  # (the archive's directory, made below)
        try:
            if not limited:
                home = Path(tempfile.mkdtemp(prefix="ember-build-home-"))
            home.mkdir(mode=0o700, exist_ok=True)
            packed = Path(tempfile.mkdtemp(prefix="pack-", dir=self.cache_dir))
            archive = packed / "env.tar.gz"
            site = work / "site"
            requirements = home / "requirements.txt"
            requirements.write_text(normalized)
            report = home / "report.json"
            t0 = time.perf_counter()
            async with self._one_build, self._full_is_too_big(work if limited else None):
                output = await self._pip(
                    [
                        "install",
                        "--target",
                        str(site),
                        "--no-warn-script-location",
                        "--progress-bar",
                        "off",
                        "--report",
                        str(report),
                        "-r",
                        str(requirements),
                    ],
                    build_env(home),
                    home,
                    [work],
                )
            build_s = time.perf_counter() - t0
            # The build is over, its processes gone: what it left is checked before the
            # platform (root) follows any path in it.
            await asyncio.to_thread(check_output, site)
            await asyncio.to_thread(check_entries, site)
            site.mkdir(exist_ok=True)  # empty requirements install nothing
            await asyncio.to_thread(reclaim, work)  # the build's uid owns nothing after it
            unpacked = await asyncio.to_thread(tree_bytes, site)
            if unpacked > self.max_env_bytes:
                raise BuildFailed(
                    f"the environment is {unpacked / (1 << 20):.0f} MiB, over the limit of "
                    f"{self.max_env_bytes / (1 << 20):.0f} MiB (FN_MAX_ENV)",
                    output,
                )
            data = await asyncio.to_thread(read_report, report)
            lock = lock_from_report(orjson.loads(data)) if data else ""
            size = await asyncio.to_thread(pack, site, archive)
            env = Environment(
                hash=env_hash,
                requirements=normalized,
                lock=lock,
                python=PYTHON,
                size_bytes=size,
                unpacked_bytes=unpacked,
                chunks=0,
                build_s=build_s,
            )
            stored_here = await self._store.put_environment(env, archive)
            stored = await self._store.get_environment(env_hash)
            assert stored is not None
            if stored_here:  # else another gateway's build won: its archive is the one kept
                await asyncio.to_thread(install, site, self.cache_dir / env_hash)
                await asyncio.to_thread(self.archives.keep, env_hash, archive)
            log.info(
                "built an environment",
                extra={"env": env_hash[:12], "build_s": build_s, "bytes": size},
            )
            return stored, output
        finally:
            if packed is not None:
                await asyncio.to_thread(shutil.rmtree, packed, True)
            await asyncio.to_thread(shutil.rmtree, home, True)
            await asyncio.to_thread(shutil.rmtree, work, True)
            if limited:
                await asyncio.to_thread(unmount_scratch, work)
                await asyncio.to_thread(shutil.rmtree, work, True)

    @contextlib.asynccontextmanager
    async def _full_is_too_big(self, scratch: Path | None) -> AsyncIterator[None]:
        """A build that failed on a full work filesystem (`builds.scratch`) is said to have
        written too much, as the disk guard of `_run` says it."""
        try:
            yield
        except BuildFailed as exc:
            if scratch is None or not (
                "No space left on device" in exc.log or await asyncio.to_thread(full, scratch)
            ):  # (a file deleted while open is freed when the build ends: ENOSPC says it)
                raise
            raise BuildFailed(
                f"the build filled its work directory: it wrote over twice the limit of "
                f"{self.max_env_bytes >> 20} MiB (FN_MAX_ENV), or too many files",
                exc.log,
            ) from None

    async def _pip(
        self, args: list[str], env: dict[str, str], cwd: Path, writable: list[Path]
    ) -> str:
        """pip, confined like a function when the backend can (`confine`): the build code of
        the packages it installs is the function author's to choose."""
        name = cwd.name
        prefix = self.confine([cwd, *writable], name) if self.confine is not None else []
        try:
            return await self._run(
                [*prefix, sys.executable, "-m", "pip", *args], env, cwd, watch=[cwd, *writable]
            )
        finally:
            if prefix and self.release_confined is not None:
                await asyncio.to_thread(self.release_confined, name)

    async def _run(
        self, argv: list[str], env: dict[str, str], cwd: Path, watch: list[Path] | None = None
    ) -> str:
        """Run a build command; its output is kept up to `MAX_BUILD_OUTPUT_BYTES` (the end of
        it), and it is stopped if what it writes in `watch` grows past twice FN_MAX_ENV."""
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: os.nice(10),
        )
        assert process.stdout is not None
        stdout = process.stdout
        tail: collections.deque[bytes] = collections.deque()
        kept = dropped = 0
        too_big: list[int] = []

        async def read() -> None:
            nonlocal kept, dropped
            while chunk := await stdout.read(1 << 16):
                tail.append(chunk)
                kept += len(chunk)
                while kept > MAX_BUILD_OUTPUT_BYTES and len(tail) > 1:
                    dropped += len(first := tail.popleft())
                    kept -= len(first)

        async def guard_disk() -> None:
            while watch:
                await asyncio.sleep(2.0)
                used = sum([await asyncio.to_thread(tree_bytes, d) for d in watch])
                if used > 2 * self.max_env_bytes:
                    too_big.append(used)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    return

        def output_text() -> str:
            text = b"".join(tail).decode(errors="replace")
            return f"[{dropped} bytes of output left out]\n{text}" if dropped else text

        guard = asyncio.create_task(guard_disk(), name="build disk guard")
        try:
            async with asyncio.timeout(self.timeout_s):
                await read()
                await process.wait()
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            if isinstance(exc, TimeoutError):
                raise BuildFailed(
                    f"the build took longer than {self.timeout_s:g}s (FN_BUILD_TIMEOUT)",
                    output_text(),
                ) from None
            raise
        finally:
            guard.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await guard
        output = output_text()
        if too_big:
            raise BuildFailed(
                f"the build wrote {too_big[0] >> 20} MiB, over twice the limit "
                f"of {self.max_env_bytes >> 20} MiB (FN_MAX_ENV)",
                output,
            )
        if process.returncode != 0:
            errors = [line for line in output.splitlines() if line.startswith("ERROR:")]
            raise BuildFailed("\n".join(errors) or output.strip()[-2000:], output)
        return output

    async def local_path(self, env_hash: str) -> Path:
        """This node's unpacked copy of an environment, fetched from Postgres the first time
        (once, however many instances ask at the same time)."""
        if not re.fullmatch(r"[0-9a-f]{64}", env_hash):
            raise ValueError(f"invalid environment hash {env_hash!r}")
        target = self.cache_dir / env_hash
        if target.exists():
            return target
        unpacking = self._unpacking.get(env_hash)
        if unpacking is None:
            unpacking = asyncio.get_running_loop().create_future()
            self._unpacking[env_hash] = unpacking
            try:
                unpacking.set_result(await self._unpack(env_hash, target))
            except BaseException as exc:
                unpacking.set_exception(exc)
                unpacking.exception()
                raise
            finally:
                self._unpacking.pop(env_hash, None)
        return await asyncio.shield(unpacking)

    async def _unpack(self, env_hash: str, target: Path) -> Path:
        env = await self._store.get_environment(env_hash)
        if env is None:
            raise BuildFailed(f"environment {env_hash[:12]} is not in the database", "")
        self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        work = Path(tempfile.mkdtemp(prefix="unpack-", dir=self.cache_dir))
        try:
            archive = work / "env.tar.gz"
            with archive.open("wb") as f:
                async for chunk in self._store.environment_chunks(env):
                    await asyncio.to_thread(f.write, chunk)
            site = work / "site"

            def extract() -> None:
                with tarfile.open(archive) as tar:
                    tar.extractall(site, filter="data")
                install(site, target)

            await asyncio.to_thread(extract)
            log.info("unpacked an environment", extra={"env": env_hash[:12]})
            return target
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
