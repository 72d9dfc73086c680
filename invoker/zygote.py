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
    -> zygote ID JSON        {"address": unix:/path, "path": DIR, "modules": [...],
                             "timeout_s": N}: fork an environment's zygote
                             (`invoker.env_zygote`), announced `forked ID PID 0` once it has
                             imported them, listening on ADDRESS: the first connection there
                             speaks this same protocol with it (its instances' `forked` and
                             `exit` lines, on that connection), else `failed` (also when the
                             imports take over N seconds: it is killed)

It is single-threaded and runs no event loop, so forking is safe. Instances die with the zygote
(PR_SET_PDEATHSIG), and the zygote exits when its stdin closes, so nothing outlives the platform.
An instance never holds the zygote's pipes: every descriptor but its listening socket and
stdio is closed before anything else runs in it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import resource
import selectors
import signal
import socket
import sys
from dataclasses import dataclass
from typing import cast

import orjson

# Imported here, before any fork, so that instances start with everything already loaded.
import invoker.context
import invoker.env_zygote
import invoker.protocol
import invoker.runtime
import invoker.sandbox
import invoker.seccomp
import invoker.specs
import invoker.template

_PR_SET_PDEATHSIG = 1
_PRELOADED = (invoker.context, invoker.protocol, invoker.runtime, invoker.sandbox, invoker.seccomp)


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


def _close_inherited(*keep: int) -> None:
    """Close every descriptor but stdio and `keep`: the zygote's pipes stay the zygote's."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limit = limit if 0 < limit < 1 << 20 else 1 << 16
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, limit)


@dataclass(slots=True)
class _Starting:
    """An instance forked but still building its walls: announced once it says it is ready."""

    request_id: str
    pid: int
    port: int
    ready_fd: int
    zygote: bool = False
    """An environment's zygote (its imports), not an instance."""


_starting: dict[int, _Starting] = {}  # by ready_fd
_selector = selectors.DefaultSelector()


def _announce(starting: _Starting) -> None:
    """Say `forked` if the instance wrote its ready byte, else `failed` (it died first)."""
    _selector.unregister(starting.ready_fd)
    del _starting[starting.ready_fd]
    try:
        said = os.read(starting.ready_fd, 512)
    except OSError:
        said = b""
    os.close(starting.ready_fd)
    if said[:1] == b"r":
        _write(f"forked {starting.request_id} {starting.pid} {starting.port}\n")
    elif said[:1] == b"e":  # an environment's zygote refused (invoker.env_zygote)
        why = said[1:].decode(errors="replace").replace("\n", " ")
        _write(f"failed {starting.request_id} {why}\n")
    elif starting.zygote:
        _write(
            f"failed {starting.request_id} the environment's zygote exited while it imported "
            "its packages: one crashed, exited, or took longer than the time allowed, and was "
            "killed (see the platform's log)\n"
        )
    else:
        _write(
            f"failed {starting.request_id} the instance exited while its sandbox was "
            "being built (see the platform's log)\n"
        )


def _fork(request_id: str, request: str, wakeup: tuple[int, int]) -> None:
    try:
        parsed = orjson.loads(request)
        address = str(parsed["address"])
        spec = cast(invoker.specs.GenericSpec, parsed.get("sandbox") or {})
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        _write(f"failed {request_id} bad fork request: {exc}\n")
        return
    try:
        sock = invoker.protocol.listen(address)
    except OSError as exc:
        _write(f"failed {request_id} cannot listen on {address}: {exc}\n")
        return
    parent = os.getpid()
    ready_r, ready_w = os.pipe()
    try:
        pid = invoker.sandbox.fork_instance(spec)
    except OSError as exc:
        sock.close()
        os.close(ready_r)
        os.close(ready_w)
        _write(f"failed {request_id} cannot fork: {exc}\n")
        return
    if pid == 0:  # the instance
        code = 0
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.setsid()  # its own process group: stopping it stops what the handler forks
            # (PID 1 of a namespace of its own sees its parent as 0)
            _die_with_parent(0 if os.getpid() == 1 else parent)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.close(devnull)
            os.dup2(2, 1)  # the control pipe is the zygote's alone
            _close_inherited(sock.fileno(), ready_w)
            invoker.template.reseed()  # (an environment's zygote may have imported numpy)
            walls = invoker.sandbox.enter(spec)
            walls.private_tmp(invoker.context.MAX_LOG_BYTES)
            os.write(ready_w, b"r")  # the walls are up: the zygote may announce us
            os.close(ready_w)
            invoker.runtime.run_instance(sock, walls=walls)
        except BaseException:
            code = 1
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    if spec.get("namespaces") and not spec.get("userns"):
        _namespace_inits.add(pid)
    port = 0 if sock.family == socket.AF_UNIX else sock.getsockname()[1]
    sock.close()
    os.close(ready_w)
    os.set_blocking(ready_r, False)
    starting = _Starting(request_id, pid, port, ready_r)
    _starting[ready_r] = starting
    _selector.register(ready_r, selectors.EVENT_READ, starting)


def _fork_zygote(request_id: str, request: str) -> None:
    """Fork an environment's zygote: it imports the environment's packages, then serves this
    protocol on the first connection to its address (see the module doc)."""
    try:
        parsed = orjson.loads(request)
        address, path = str(parsed["address"]), str(parsed["path"])
        modules = [str(m) for m in parsed.get("modules", [])]
        timeout_s = float(parsed.get("timeout_s", 0))
        sock = invoker.protocol.listen(address)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OSError) as exc:
        _write(f"failed {request_id} bad zygote request: {exc}\n")
        return
    parent = os.getpid()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            os.setsid()
            _die_with_parent(parent)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.close(devnull)
            os.dup2(2, 1)
            _close_inherited(sock.fileno(), ready_w)
            _forget_parent_state()
            if timeout_s > 0:  # a package that blocks at import: killed (SIGALRM's default)
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                signal.setitimer(signal.ITIMER_REAL, timeout_s)
            try:
                imported = invoker.env_zygote.prepare(path, modules)
            except invoker.env_zygote.EnvironmentRefused as exc:
                os.write(ready_w, b"e" + str(exc).encode()[:500])
                return
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            os.write(ready_w, b"r")
            os.close(ready_w)
            sock.settimeout(10.0)
            conn, _ = sock.accept()
            sock.close()
            os.dup2(conn.fileno(), 0)
            os.dup2(conn.fileno(), 1)
            conn.close()
            _serve({**_capabilities, **imported})
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    sock.close()
    os.close(ready_w)
    os.set_blocking(ready_r, False)
    starting = _Starting(request_id, pid, 0, ready_r, zygote=True)
    _starting[ready_r] = starting
    _selector.register(ready_r, selectors.EVENT_READ, starting)


def _forget_parent_state() -> None:
    """In a new environment's zygote: the runtime zygote's children, selector and namespace
    descriptor are not its own (their descriptors are closed already)."""
    global _selector
    _starting.clear()
    _namespace_inits.clear()
    # Kept, never collected: its descriptor is closed, and its number may be the new one's.
    _abandoned.append(_selector)
    _selector = selectors.DefaultSelector()
    invoker.sandbox.forget_pid_namespace()


_abandoned: list[selectors.BaseSelector] = []
_capabilities: dict[str, object] = {}
"""What `invoker.sandbox.probe` found (an environment's zygote reports it again)."""


_namespace_inits: set[int] = set()
"""Instances that are the PID 1 of their namespace: they exit with 128 + the signal that
ended the invoker (a PID 1 cannot die by its own signals), reported as that signal."""


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        for starting in list(_starting.values()):
            if starting.pid == pid:  # died before its announcement was read: that first
                _announce(starting)
        code = os.waitstatus_to_exitcode(status)
        if pid in _namespace_inits:
            _namespace_inits.discard(pid)
            if 128 < code < 128 + signal.NSIG:
                code = 128 - code
        _write(f"exit {pid} {code}\n")


def run_zygote() -> None:
    capabilities = invoker.sandbox.probe()  # before our SIGCHLD handler: it reaps its child
    if capabilities.get("seccomp"):
        invoker.seccomp.precompile()
    _capabilities.update(capabilities)
    _serve(capabilities)


def _serve(capabilities: dict[str, object]) -> None:
    # What is loaded now is never collected: a collection in an instance would otherwise
    # write to every object's header and copy the pages it shares with us.
    gc.collect()
    gc.freeze()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    selector = _selector
    selector.register(0, selectors.EVENT_READ, "stdin")
    selector.register(wake_r, selectors.EVENT_READ, "signal")
    _write("ready " + orjson.dumps(capabilities).decode() + "\n")
    pending = b""
    while True:
        for key, _ in selector.select():
            if isinstance(key.data, _Starting):
                # (unless a reap announced it already, and its descriptor number was reused)
                if _starting.get(key.data.ready_fd) is key.data:
                    _announce(key.data)
                continue
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
                elif len(parts) == 3 and parts[0] == "zygote":
                    _fork_zygote(parts[1], parts[2])
                elif parts:
                    _write(f"failed ? unknown command {line.decode()!r}\n")
