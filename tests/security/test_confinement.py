"""The walls themselves, seen from inside: an instance's identity, the syscalls seccomp denies
around it, its own /dev, and requirements builds confined as instances are."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.security.conftest import TRY, Platform

pytestmark = [pytest.mark.timeout(120)]


def test_identity_of_an_instance(platform: Platform) -> None:
    source = textwrap.dedent("""
        import os
        def handler(event, context):
            status = dict(line.split(":\\t", 1) for line in open("/proc/self/status")
                          if ":\\t" in line)
            return {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
                    "no_new_privs": status["NoNewPrivs"].strip(),
                    "seccomp": status["Seccomp"].strip(), "cap_eff": status["CapEff"].strip(),
                    "hostname": os.uname().nodename, "tmp": os.listdir("/tmp")}
    """)
    seen = platform.attack("whoami", source)
    assert seen["uid"] >= 100_000, seen
    assert seen["gid"] == seen["uid"], seen
    assert seen["groups"] == []
    assert (seen["no_new_privs"], seen["seccomp"]) == ("1", "2")
    assert int(seen["cap_eff"], 16) == 0
    other = platform.attack("whoami-too", source)
    assert other["uid"] != seen["uid"]  # a uid per function


# -- found by a hostile review: around seccomp, the host's /dev, builds ----------------------------


def test_io_uring_and_datagram_socketpairs_are_denied(platform: Platform) -> None:
    source = TRY + textwrap.dedent("""
        def handler(event, context):
            libc = ctypes.CDLL(None, use_errno=True)
            params = ctypes.create_string_buffer(120)

            def uring():
                fd = libc.syscall(425, 8, params)  # io_uring_setup
                if fd < 0:
                    raise OSError(ctypes.get_errno(), "io_uring_setup")
                return fd

            def datagram():
                a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                a.sendto(b"hello", b"\\0ember-probe")

            return {"uring": attempt(uring), "dgram": attempt(datagram),
                    "stream pair": attempt(lambda: len(socket.socketpair()))}
    """)
    seen = platform.attack("uring", source)
    assert seen["uring"].startswith("failed: OSError: [Errno 38]"), seen  # ENOSYS
    assert seen["dgram"].startswith("failed: PermissionError"), seen
    assert seen["stream pair"] == "succeeded: 2", seen  # what asyncio and others need
    platform.healthy()


def test_dev_is_the_instance_own(platform: Platform) -> None:
    source = TRY + textwrap.dedent("""
        def handler(event, context):
            terminals = []
            def open_many():
                for _ in range(200):
                    terminals.append(os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY))
            outcome = attempt(open_many)
            return {"dev": sorted(os.listdir("/dev")), "ptmx": outcome,
                    "opened": len(terminals), "null": attempt(
                        lambda: os.write(os.open("/dev/null", os.O_WRONLY), b"x"))}
    """)
    seen = platform.attack("ptys", source)
    assert set(seen["dev"]) <= {
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "tty",
        "fd",
        "stdin",
        "stdout",
        "stderr",
        "ptmx",
        "pts",
        "shm",
    }, seen
    # Its own devpts, capped at 64 (and kernel.pty.reserve keeps the host's own terminals).
    assert seen["opened"] == 64, seen
    assert seen["ptmx"].startswith("failed: OSError: [Errno 28]"), seen
    assert seen["null"] == "succeeded: 1", seen
    platform.healthy()


def test_requirements_builds_run_inside_the_walls(platform: Platform, tmp_path: Path) -> None:
    """A package's build code (setup.py, a PEP 517 backend) is the function author's: pip runs
    confined as instances are, with only its work directories writable."""
    del platform  # (for its skip: the same host conditions)
    from scheduler.backends.isolation import IsolationSettings
    from scheduler.backends.local import LocalBackend

    state = tmp_path / "state"
    (state / "envs").mkdir(parents=True)
    (state / "token").write_text("secret-token")
    work = state / "envs" / "build-x"
    work.mkdir()
    attack = textwrap.dedent("""
        import json, os, socket
        def attempt(fn):
            try:
                return "succeeded: " + repr(fn())[:100]
            except BaseException as exc:
                return f"failed: {type(exc).__name__}"
        print(json.dumps({
            "uid": os.getuid(),
            "token": attempt(lambda: open(%r).read()),
            "write work": attempt(lambda: open(%r, "w").write("x")),
            "write elsewhere": attempt(lambda: open("/etc/ember-pwned", "w").write("x")),
            "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
            "postgres": attempt(lambda: socket.create_connection(("127.0.0.1", 5432), 2)),
        }))
    """) % (str(state / "token"), str(work / "site.txt"))

    async def run() -> dict[str, Any]:
        backend = LocalBackend(
            isolation=IsolationSettings(), private_paths=(state,), environments=state / "envs"
        )
        await backend.start()
        try:
            prefix = backend.confine_command([work], "x")
            assert prefix, backend.report.summary()
            result = await asyncio.to_thread(
                subprocess.run,
                [*prefix, sys.executable, "-c", attack],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            seen: dict[str, Any] = json.loads(result.stdout)
            backend.release_build("x")
            return seen
        finally:
            await backend.close()

    import asyncio

    seen = asyncio.run(run())
    assert seen["uid"] == IsolationSettings().uid_first + IsolationSettings().uid_count - 1
    assert seen["token"] == "failed: FileNotFoundError", seen
    assert seen["write work"].startswith("succeeded"), seen
    assert seen["write elsewhere"].startswith("failed"), seen
    assert seen["pids"] == [1], seen  # the build itself is its namespace's PID 1
    assert seen["postgres"] == "failed: OSError", seen
    assert not Path("/etc/ember-pwned").exists()


# What the build's code does instead of pip: fill the disk with a file it deleted while it
# keeps it open (a count of the files it leaves sees nothing), or with empty files.
FILL = textwrap.dedent("""
    import os, sys
    written = 0
    try:
        if sys.argv[1] == "unlinked":
            with open("big", "wb") as f:
                os.unlink("big")
                for _ in range(256):
                    f.write(b"x" * (1 << 20))
                    f.flush()
                    written += 1 << 20
        elif sys.argv[1] == "fifo":  # where pip installs: packing and copying trip on it
            os.makedirs("../site/pkg")
            open("../site/pkg/__init__.py", "w").close()
            os.mkfifo("../site/pkg/p")
        else:
            for i in range(200_000):
                open(f"empty-{i}", "w").close()
                written += 1
    finally:
        print("wrote", written, flush=True)
""")


@pytest.mark.parametrize("how", ["unlinked", "inodes", "fifo"])
def test_a_build_cannot_fill_the_hosts_disk(platform: Platform, tmp_path: Path, how: str) -> None:
    """A build writes on a tmpfs of twice FN_MAX_ENV mounted at its work directory: a file it
    deleted but keeps open, or a flood of empty files, fill that, not the host's disk; a named
    pipe left where packages go is refused before packing or copying trips on it."""
    del platform  # (for its skip: the same host conditions)
    import asyncio

    from builds.builder import Builder
    from builds.requirements import BuildFailed
    from scheduler.backends.isolation import IsolationSettings
    from scheduler.backends.local import LocalBackend

    state = tmp_path / "state"
    cache = state / "envs"
    cache.mkdir(parents=True)

    async def run() -> str:
        backend = LocalBackend(
            isolation=IsolationSettings(), private_paths=(state,), environments=cache
        )
        await backend.start()
        builder = Builder(None, cache, max_env_bytes=8 << 20)  # type: ignore[arg-type]
        builder.confine = backend.confine_command
        builder.release_confined = backend.release_build

        async def pip(args: list[str], env: dict[str, str], cwd: Path, writable: list[Path]) -> str:
            work = writable[0]
            assert work.is_mount(), "the work directory is not a filesystem of its own"
            assert cwd.is_relative_to(work)  # pip's home too
            prefix = backend.confine_command([cwd, *writable], "fill")
            assert prefix, backend.report.summary()
            try:
                return await builder._run(
                    [*prefix, sys.executable, "-c", FILL, how], env, cwd, watch=[cwd, *writable]
                )
            finally:
                backend.release_build("fill")

        builder._pip = pip  # type: ignore[method-assign]
        try:
            with pytest.raises(BuildFailed) as failed:
                await builder._build("example==1.0\n", "f" * 64)
            return f"{failed.value}\n{failed.value.log}"
        finally:
            await backend.close()

    text = asyncio.run(run())
    if how == "fifo":
        assert "left 'pkg/p', which is not a file, a directory or a link" in text, text
        assert list(cache.iterdir()) == [], "a work directory (or its mount) was left behind"
        return
    assert "the build filled its work directory" in text, text
    wrote = int(text.rsplit("wrote ", 1)[1].split()[0])
    if how == "unlinked":
        assert wrote <= 16 << 20, text  # twice FN_MAX_ENV, not 256 MiB
    else:
        assert wrote <= 1 << 16, text  # the tmpfs's inodes
    assert list(cache.iterdir()) == [], "a work directory (or its mount) was left behind"
