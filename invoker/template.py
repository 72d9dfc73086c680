"""A function version's template: an instance that imported the function and then forks the
next instances of that version, copy-on-write, so that a cold start is a fork, not an import.

The platform makes one by specializing a generic instance with `"template": true`: the walls
close and the module is imported as for any instance, then the instance leaves its event loop
and serves this line protocol on the connection that specialized it (a Unix socket):

    -> fork ID               with two descriptors (SCM_RIGHTS): the listening socket of the
                             new instance, and a socket of a pair whose other end the platform
                             holds (SO_PASSCRED: the child's first byte tells the platform its
                             pid, which it moves into a cgroup of its own before saying go)
    -> retire                fork no more; exit once every child has exited
    <- forked ID PID         (PID as the template's PID namespace sees it)
    <- failed ID MESSAGE
    <- exit PID CODE         a child ended (CODE: exit code, or minus the signal number)

Forks share what the template built and nothing of each other: each gets its own process
group, output capture, event loop and random state (`after_fork`). They share the template's
namespaces, uid and seccomp filter: the same walls, those of the same function version.
A template is refused (`template_refusal`) when the module left what a fork cannot share:
threads (they do not survive a fork), sockets (two processes on one connection), or a style
with a startup hook (state bound to the template's event loop).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import gc
import os
import resource
import selectors
import signal
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NamedTuple

from invoker.output import OutputCapture

if TYPE_CHECKING:
    from invoker.sandbox import Walls

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]

_MAX_FDS = 4


def socket_inodes() -> set[str]:
    """The sockets this process holds (their /proc link names)."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{name}")
            if link.startswith("socket:"):
                found.add(link)
    return found


def template_refusal(threads_before: set[int], sockets_before: set[str]) -> str | None:
    """Why the module just imported cannot be forked safely, or None."""
    threads = [t.name for t in threading.enumerate() if t.ident not in threads_before]
    if threads:
        return f"its module-level code started threads ({', '.join(sorted(threads))})"
    sockets = socket_inodes() - sockets_before
    if sockets:
        return f"its module-level code opened {len(sockets)} socket(s)"
    return None


def reseed() -> None:
    """Give this fork random state of its own: `random` reseeds itself at fork (and
    `os.urandom`, `secrets`, `uuid4`, `ssl` draw from the kernel or reseed themselves); numpy's
    global generator does not."""
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        with contextlib.suppress(Exception):
            numpy_random.seed()


def after_fork(max_output_bytes: int, walls: Walls) -> None:
    """What must not be shared between forks of one template (SOCK, ATC'18; Catalyzer,
    ASPLOS'20): random state, and the output capture (its thread stayed in the template)."""
    reseed()
    walls.output = OutputCapture(max_output_bytes)
    walls.output.attach()


class Acceptor:
    """Serves a socket that is listening already (a fork of a template gets its listening
    socket from the platform, and its seccomp filter denies the listen() a server makes)."""

    def __init__(self, sock: socket.socket, serve: Serve) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._serve = serve
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = asyncio.create_task(self._accept(), name="accept")

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self._sock)
            reader, writer = await asyncio.open_unix_connection(sock=conn, limit=1 << 20)
            task = asyncio.create_task(self._serve(reader, writer), name="connection")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def __aenter__(self) -> Acceptor:
        return self

    async def __aexit__(self, *_: object) -> None:
        self._accepting.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(self._accepting, *self._tasks, return_exceptions=True)
        self._sock.close()


def _write(sock: socket.socket, line: str) -> None:
    sock.sendall(line.encode())


def _child(listener: int, hello: int, fork: Fork) -> None:
    """In a new fork: leave the template's session and descriptors, wait for the platform's
    go (it has moved us into our cgroup), then serve like any instance."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    low = 3
    for fd in sorted((listener, hello)):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, limit if 0 < limit < 1 << 20 else 1 << 16)
    os.write(hello, b"r")
    go = os.read(hello, 1)
    os.close(hello)
    if go != b"g":
        os._exit(1)
    after_fork(fork.max_output_bytes, fork.walls)
    fork.serve(socket.socket(fileno=listener))


class Fork(NamedTuple):
    """What a fork needs of the template's runtime."""

    walls: Walls
    max_output_bytes: int
    serve: Callable[[socket.socket], None]
    """Serve calls on a listening socket (the runtime's, specialized already)."""


def serve_template(sock: socket.socket, fork: Fork) -> None:
    """Fork instances on request until retired and childless, or until the platform hangs up."""
    gc.collect()
    gc.freeze()  # so that a fork's collections do not touch (and copy) the template's pages
    sock.setblocking(True)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "control")
    selector.register(wake_r, selectors.EVENT_READ, "signal")
    children: set[int] = set()
    fds: deque[int] = deque()
    pending = b""
    retired = False
    while not (retired and not children):
        for key, _ in selector.select():
            if key.data == "signal":
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                _reap(sock, children)
                continue
            data, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(_MAX_FDS * 4))
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    received = array.array("i")
                    received.frombytes(payload[: len(payload) - len(payload) % 4])
                    fds.extend(received)
            if not data:
                return  # the platform is gone (the namespace goes with us)
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                parts = line.decode(errors="replace").split()
                if parts[:1] == ["retire"]:
                    retired = True
                elif len(parts) == 2 and parts[0] == "fork" and len(fds) >= 2 and not retired:
                    listener, hello = fds.popleft(), fds.popleft()
                    _fork(sock, parts[1], listener, hello, fork, children)
                else:
                    _write(sock, f"failed {parts[1] if len(parts) > 1 else '?'} bad request\n")


def _fork(
    sock: socket.socket,
    request_id: str,
    listener: int,
    hello: int,
    fork: Fork,
    children: set[int],
) -> None:
    try:
        pid = os.fork()
    except OSError as exc:
        _write(sock, f"failed {request_id} cannot fork: {exc}\n")
        os.close(listener)
        os.close(hello)
        return
    if pid == 0:
        code = 0
        try:
            _child(listener, hello, fork)
        except BaseException:
            code = 1
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(listener)
    os.close(hello)
    children.add(pid)
    _write(sock, f"forked {request_id} {pid}\n")


def _reap(sock: socket.socket, children: set[int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in children:
            children.discard(pid)
            with contextlib.suppress(OSError):
                _write(sock, f"exit {pid} {os.waitstatus_to_exitcode(status)}\n")
