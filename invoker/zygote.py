"""The zygote: a process that has imported the runtime once and forks instances on request.

A fork of an already imported Python takes about 2 ms and shares its memory copy-on-write, where
starting a new interpreter takes ~100 ms and ~15 MB. The zygote speaks a line protocol on its
stdin/stdout with the local backend:

    -> fork ID JSON          {"address": ADDRESS, "sandbox": {...}}: listen on ADDRESS
                             (unix:/path, or a host: any port), fork an instance that serves
                             it inside the walls `sandbox` asks for (`invoker.sandbox`)
    <- ready JSON            first: what this host lets it build (`invoker.sandbox.probe`)
    <- forked ID PID PORT    the instance is accepting connections (PORT 0 for unix:)
    <- failed ID MESSAGE
    <- exit PID CODE         an instance ended (CODE: exit code, or minus the signal number)

It is single-threaded and runs no event loop, so forking is safe. Instances die with the zygote
(PR_SET_PDEATHSIG), and the zygote exits when its stdin closes, so nothing outlives the platform.
An instance never holds the zygote's pipes: every descriptor but its listening socket and
stdio is closed before anything else runs in it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import selectors
import signal
import socket
import sys
from typing import cast

import orjson

# Imported here, before any fork, so that instances start with everything already loaded.
import invoker.context
import invoker.protocol
import invoker.runtime
import invoker.sandbox

_PR_SET_PDEATHSIG = 1
_PRELOADED = (invoker.context, invoker.protocol, invoker.runtime, invoker.sandbox)


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the zygote died before prctl took effect
        os._exit(1)


def _write(line: str) -> None:
    data = line.encode()
    while data:
        written = os.write(1, data)
        data = data[written:]


def _close_inherited(keep: int) -> None:
    """Close every descriptor but stdio and `keep`: the zygote's pipes stay the zygote's."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limit = limit if 0 < limit < 1 << 20 else 1 << 16
    os.closerange(3, keep)
    os.closerange(keep + 1, limit)


def _fork(request_id: str, request: str, wakeup: tuple[int, int]) -> None:
    try:
        parsed = orjson.loads(request)
        address = str(parsed["address"])
        spec = cast(invoker.sandbox.GenericSpec, parsed.get("sandbox") or {})
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        _write(f"failed {request_id} bad fork request: {exc}\n")
        return
    try:
        sock = invoker.protocol.listen(address)
    except OSError as exc:
        _write(f"failed {request_id} cannot listen on {address}: {exc}\n")
        return
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the instance
        code = 0
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.setsid()  # its own process group: stopping it stops what the handler forks
            _die_with_parent(parent)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.close(devnull)
            os.dup2(2, 1)  # the control pipe is the zygote's alone
            _close_inherited(sock.fileno())
            walls = invoker.sandbox.enter(spec)
            walls.private_tmp()
            invoker.runtime.run_instance(sock, walls=walls)
        except BaseException:
            code = 1
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    port = 0 if sock.family == socket.AF_UNIX else sock.getsockname()[1]
    sock.close()
    _write(f"forked {request_id} {pid} {port}\n")


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _write(f"exit {pid} {os.waitstatus_to_exitcode(status)}\n")


def run_zygote() -> None:
    capabilities = invoker.sandbox.probe()  # before our SIGCHLD handler: it reaps its child
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, "stdin")
    selector.register(wake_r, selectors.EVENT_READ, "signal")
    _write("ready " + orjson.dumps(capabilities).decode() + "\n")
    pending = b""
    while True:
        for key, _ in selector.select():
            if key.data == "signal":
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                _reap()
                continue
            chunk = os.read(0, 65536)
            if not chunk:
                return  # the platform is gone; PDEATHSIG takes the instances with us
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                parts = line.decode().split(maxsplit=2)  # the JSON may hold spaces
                if len(parts) == 3 and parts[0] == "fork":
                    _fork(parts[1], parts[2], (wake_r, wake_w))
                elif parts:
                    _write(f"failed ? unknown command {line.decode()!r}\n")
