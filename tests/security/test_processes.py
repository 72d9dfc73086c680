"""What an instance may do to the platform's processes and channels: signal the gateway or the
zygote, take or garble the zygote's pipe, replace another instance's socket, forge a reply
(attacks 4 to 6 of docs/security.md, and a forged status)."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.security.conftest import TRY, Platform

pytestmark = [pytest.mark.timeout(120)]


# -- 4 and 5. the platform's processes and the zygote's pipe --------------------------------------


def test_4_cannot_signal_the_gateway_or_the_zygote(platform: Platform) -> None:
    zygote = platform.zygote_pid
    source = TRY + textwrap.dedent("""
        def handler(event, context):
            out = {}
            for name in ("gateway", "zygote"):
                for sig in (signal.SIGSTOP, signal.SIGKILL):
                    out[f"{name} {sig.name}"] = attempt(lambda: os.kill(event[name], sig))
            out["everyone"] = attempt(lambda: os.kill(-1, signal.SIGKILL))
            return out
    """)
    seen = platform.attack("killer", source, {"gateway": platform.process.pid, "zygote": zygote})
    for key, outcome in seen.items():
        if key != "everyone":
            assert outcome.startswith("failed: ProcessLookupError"), (key, outcome)
    assert platform.process.poll() is None
    assert psutil.Process(zygote).status() != psutil.STATUS_STOPPED
    platform.healthy()


def test_5_cannot_take_the_zygote_pipe_and_garbage_on_it_is_survived(platform: Platform) -> None:
    zygote = platform.zygote_pid
    source = TRY + textwrap.dedent("""
        def handler(event, context):
            libc = ctypes.CDLL(None, use_errno=True)
            def pidfd():
                fd = libc.syscall(434, event["zygote"], 0)  # pidfd_open
                if fd < 0:
                    raise OSError(ctypes.get_errno(), "pidfd_open")
                got = libc.syscall(438, fd, 1, 0)  # pidfd_getfd
                if got < 0:
                    raise OSError(ctypes.get_errno(), "pidfd_getfd")
                return got
            return {"pidfd_getfd": attempt(pidfd)}
    """)
    seen = platform.attack("pipe", source, {"zygote": zygote})
    assert seen["pidfd_getfd"].startswith(
        ("failed: ProcessLookupError", "failed: PermissionError")
    ), seen
    # What the attack would have done, done from the host: garbage on the report pipe.
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(434, zygote, 0)
    assert pidfd >= 0, ctypes.get_errno()
    pipe = libc.syscall(438, pidfd, 1, 0)
    assert pipe >= 0, ctypes.get_errno()
    os.write(pipe, b"\n")
    os.close(pipe)
    os.close(pidfd)
    deadline = time.monotonic() + 20
    reported: list[str] = []
    while time.monotonic() < deadline:
        reply = platform.client.request("GET", "/healthz")
        health = reply.json()
        if reply.status == 503:  # until the zygote is replaced, /healthz says why
            reported.append(health["error"]["message"])
        elif health["isolation"]["incidents"] and platform.zygote_pid != zygote:
            break
        time.sleep(0.02)
    assert "malformed report" in health["isolation"]["incidents"][0]
    assert platform.zygote_pid != zygote
    assert all("malformed report" in message for message in reported)
    platform.deploy("after-garbage", "def handler(event, context):\n    return 'fine'\n")
    assert platform.value("after-garbage") == "fine"
    platform.healthy()


# -- 6. the channel ------------------------------------------------------------------------------


def test_6_cannot_replace_another_instance_socket(platform: Platform) -> None:
    socket_dir = next(Path("/tmp").glob(f"ember-{platform.process.pid}-*"))
    source = TRY + textwrap.dedent("""
        def handler(event, context):
            def hijack():
                for path in glob.glob(event["dir"] + "/*.sock"):
                    os.unlink(path)
                s = socket.socket(socket.AF_UNIX)
                s.bind(event["dir"] + "/x.sock")
                s.listen()
            def bind_anywhere():
                s = socket.socket(socket.AF_UNIX)
                s.bind("/tmp/mine.sock")
            return {"list": attempt(lambda: os.listdir(event["dir"])),
                    "hijack": attempt(hijack), "bind": attempt(bind_anywhere)}
    """)
    seen = platform.attack("hijack", source, {"dir": str(socket_dir)})
    assert seen["list"].startswith("failed: FileNotFoundError"), seen
    assert seen["hijack"].startswith("failed"), seen
    assert seen["bind"].startswith("failed: PermissionError"), seen  # seccomp: no servers
    assert not (socket_dir / "x.sock").exists()
    # The next deploy's code goes to a genuine generic instance, as do its callers.
    platform.deploy("after-hijack", "def handler(event, context):\n    return 'genuine'\n")
    assert platform.value("after-hijack") == "genuine"
    platform.healthy()


# -- found by a hostile review: a forged reply -----------------------------------------------------


def test_a_forged_status_does_not_reach_the_caller(platform: Platform) -> None:
    """The runtime refuses 1xx statuses; a handler that replaces the runtime's encoder gets
    the same answer from the gateway (no protocol switch through a proxy)."""
    source = textwrap.dedent("""
        import invoker.styles.native

        def forged(result):
            return 101, [["Upgrade", "websocket"], ["Connection", "Upgrade"]], b""

        invoker.styles.native.encode_result = forged

        def handler(event, context):
            return "upgrade me"
    """)
    platform.deploy("switcher", source)
    reply = platform.call("switcher")
    assert reply.status == 502, reply
    assert reply.json()["error"]["code"] == "invalid_response"
    platform.healthy()
