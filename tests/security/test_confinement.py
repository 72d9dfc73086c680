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
