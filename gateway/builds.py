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
import hashlib
import io
import logging
import os
import re
import shutil
import signal
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from store import Environment, Store

log = logging.getLogger("ember.gateway.builds")
MAX_REQUIREMENTS_BYTES = 64 << 10
PYTHON = f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}"
PLATFORM = sysconfig.get_platform()
_REFUSED_LINE = re.compile(r"^\s*(-e\b|--editable\b|-r\b|--requirement\b|-c\b|--constraint\b"
                           r"|\.{0,2}/|file:|[A-Za-z]:\\)")
# What the build may see of the platform's environment: where to find packages, not secrets.
_BUILD_ENV_KEEP = re.compile(r"^(PATH|LANG|LC_[A-Z]+|TZ|PIP_[A-Z_]+|UV_INDEX_URL"
                             r"|(HTTPS?|NO|ALL)_PROXY|(https?|no|all)_proxy"
                             r"|SSL_CERT_(FILE|DIR)|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE)$")


class BuildFailed(Exception):
    """pip could not install the requirements; `log` is its whole output."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


class RequirementsError(ValueError):
    """The requirements cannot be built here (a local path, an editable install, ...)."""


def normalize_requirements(text: str) -> str:
    """One requirement per line, comments and blank lines dropped, sorted: the same set of
    requirements always hashes the same. Lines that point at the deployer's own files are
    refused: the build runs on the platform, which cannot see them."""
    if len(text.encode()) > MAX_REQUIREMENTS_BYTES:
        raise RequirementsError(f"requirements are larger than {MAX_REQUIREMENTS_BYTES} bytes")
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if _REFUSED_LINE.match(line):
            raise RequirementsError(
                f"requirements line {number}: {line!r} refers to files the platform cannot "
                "see (local paths, -e, -r and -c are not supported); list packages from an "
                "index instead")
        lines.append(line)
    return "\n".join(sorted(set(lines))) + "\n" if lines else ""


def environment_hash(normalized: str) -> str:
    return hashlib.sha256(f"{PYTHON}\n{PLATFORM}\n{normalized}".encode()).hexdigest()


def build_env(home: Path) -> dict[str, str]:
    """pip's environment: package-index settings and proxies pass, nothing else of the
    platform's (no DATABASE_URL, no admin token)."""
    env = {k: v for k, v in os.environ.items() if _BUILD_ENV_KEEP.match(k)}
    env.update(HOME=str(home), PYTHONNOUSERSITE="1", PIP_NO_INPUT="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
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


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def pack(root: Path) -> bytes:
    """A tar.gz of `root`, entries in a fixed order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=3) as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return buffer.getvalue()


class Builder:
    def __init__(self, store: Store, cache_dir: Path, *, timeout_s: float = 600.0,
                 max_env_bytes: int = 1 << 30) -> None:
        self._store = store
        self.cache_dir = cache_dir
        self.timeout_s = timeout_s
        self.max_env_bytes = max_env_bytes
        self._building: dict[str, asyncio.Future[Environment]] = {}
        self._unpacking: dict[str, asyncio.Future[Path]] = {}

    async def ensure(self, function: str, requirements: str) -> Environment:
        """The environment for `requirements`: found, or built now. Every call is recorded as
        a build of `function` (`cached`, `succeeded` or `failed` with pip's output).
        Raises RequirementsError, or BuildFailed."""
        normalized = normalize_requirements(requirements)
        env_hash = environment_hash(normalized)
        t0 = time.perf_counter()
        found = await self._store.get_environment(env_hash)
        if found is not None:
            await self._store.record_build(function, env_hash, "cached",
                                           f"reused environment {env_hash[:12]}\n"
                                           + found.lock, 0.0)
            return found
        building = self._building.get(env_hash)
        if building is None:  # one build per hash at a time on this gateway
            building = asyncio.get_running_loop().create_future()
            self._building[env_hash] = building
            try:
                env, output = await self._build(normalized, env_hash)
            except BaseException as exc:
                building.set_exception(exc)
                building.exception()  # retrieved: nobody else may be waiting
                self._building.pop(env_hash, None)
                if isinstance(exc, BuildFailed):
                    await self._store.record_build(function, env_hash, "failed", exc.log,
                                                   time.perf_counter() - t0)
                raise
            building.set_result(env)
            self._building.pop(env_hash, None)
            await self._store.record_build(function, env_hash, "succeeded", output,
                                           env.build_s)
            return env
        env = await asyncio.shield(building)
        await self._store.record_build(function, env_hash, "cached",
                                       f"built meanwhile for another deploy: {env_hash[:12]}\n",
                                       time.perf_counter() - t0)
        return env

    async def _build(self, normalized: str, env_hash: str) -> tuple[Environment, str]:
        self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        work = Path(tempfile.mkdtemp(prefix="build-", dir=self.cache_dir))
        try:
            site, home = work / "site", work / "home"
            home.mkdir()
            requirements = work / "requirements.txt"
            requirements.write_text(normalized)
            report = work / "report.json"
            t0 = time.perf_counter()
            output = await self._pip(
                ["install", "--target", str(site), "--no-warn-script-location",
                 "--progress-bar", "off", "--report", str(report), "-r", str(requirements)],
                build_env(home), work)
            build_s = time.perf_counter() - t0
            site.mkdir(exist_ok=True)  # empty requirements install nothing
            unpacked = await asyncio.to_thread(_tree_bytes, site)
            if unpacked > self.max_env_bytes:
                raise BuildFailed(
                    f"the environment is {unpacked / (1 << 20):.0f} MiB, over the limit of "
                    f"{self.max_env_bytes / (1 << 20):.0f} MiB (FN_MAX_ENV)", output)
            lock = lock_from_report(orjson.loads(report.read_bytes())) \
                if report.exists() else ""
            archive = await asyncio.to_thread(pack, site)
            env = Environment(hash=env_hash, requirements=normalized, lock=lock, python=PYTHON,
                              size_bytes=len(archive), unpacked_bytes=unpacked,
                              chunks=0, build_s=build_s)
            await self._store.put_environment(env, archive)
            stored = await self._store.get_environment(env_hash)
            assert stored is not None
            target = self.cache_dir / env_hash
            if not target.exists():
                site.rename(target)  # this node has it unpacked already
            log.info("built an environment", extra={"env": env_hash[:12], "build_s": build_s,
                                                    "bytes": len(archive)})
            return stored, output
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _pip(self, args: list[str], env: dict[str, str], cwd: Path) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pip", *args, env=env, cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        try:
            async with asyncio.timeout(self.timeout_s):
                out, _ = await process.communicate()
        except BaseException as exc:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            if isinstance(exc, TimeoutError):
                raise BuildFailed(f"the build took longer than {self.timeout_s:g}s "
                                  "(FN_BUILD_TIMEOUT)", "") from None
            raise
        output = out.decode(errors="replace")
        if process.returncode != 0:
            errors = [line for line in output.splitlines() if line.startswith("ERROR:")]
            raise BuildFailed("\n".join(errors) or output.strip()[-2000:], output)
        return output

    async def local_path(self, env_hash: str) -> Path:
        """This node's unpacked copy of an environment, fetched from Postgres the first time
        (once, however many instances ask at the same time)."""
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
                    f.write(chunk)
            site = work / "site"

            def extract() -> None:
                with tarfile.open(archive) as tar:
                    tar.extractall(site, filter="data")
                if not target.exists():
                    site.rename(target)

            await asyncio.to_thread(extract)
            log.info("unpacked an environment", extra={"env": env_hash[:12]})
            return target
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
