"""The invoker runtime: a generic process that is specialized with one function version.

It listens on a TCP port for the frames of `invoker.protocol`. Until specialized it is generic
(prewarmed, holding no user code); `specialize` imports the user's module once, after which each
`invoke` runs `handler(event, context)` and replies with its response or a structured error.
Deadlines are enforced by the platform, which discards an instance that overruns: a sync handler
cannot be interrupted safely from inside the process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import importlib.machinery
import importlib.util
import io
import logging
import os
import resource
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, cast

from invoker import env_zygote, styles
from invoker.context import (
    MAX_LOG_BYTES,
    Capture,
    Context,
    PermanentError,
    RetryAfter,
    current_capture,
    install_capture,
)
from invoker.environments import Fetched, cache_dir, ensure_environment
from invoker.protocol import (
    SMALL_FRAME_BYTES,
    ErrorInfo,
    InvokeRequest,
    Reply,
    SpecializeRequest,
    encode_frame,
    read_frame,
)
from invoker.sandbox import Walls
from invoker.specs import SpecializeSpec
from invoker.styles.detect import before_import, default_entry, detect_style, resolve_entry
from invoker.styles.native import decode_event, encode_result
from invoker.template import Acceptor, Fork, serve_template, socket_inodes, template_refusal

__all__ = ["Runtime", "decode_event", "encode_result", "run_instance"]

log = logging.getLogger("ember.invoker")

SHUTDOWN_TIMEOUT_S = 10.0
"""Longest wait for a style's shutdown when the instance stops (SIGKILL may come sooner)."""


def _error(exc: BaseException, *, user_file: str | None = None) -> ErrorInfo:
    info: ErrorInfo = {"type": type(exc).__name__, "message": str(exc)}
    tb = exc.__traceback__
    frames = traceback.extract_tb(tb)
    if user_file is not None:
        # Only the user's frames: the runtime's own are noise to a function author.
        frames = traceback.StackSummary.from_list(
            [f for f in frames if not f.filename.startswith(str(Path(__file__).parent))]
        )
    info["traceback"] = (
        "Traceback (most recent call last):\n" + "".join(frames.format()) if frames else ""
    ) + "".join(traceback.format_exception_only(type(exc), exc))
    if isinstance(exc, SyntaxError) and exc.lineno is not None:
        info["line"] = exc.lineno
    if isinstance(exc, PermanentError):
        info["retry"] = False
    elif isinstance(exc, RetryAfter):
        info["retry_after_s"] = exc.seconds
    return info


class Runtime:
    """One instance's state: generic until `specialize`, then bound to one function version."""

    def __init__(self, walls: Walls | None = None) -> None:
        self.walls = walls or Walls.none()
        self.max_reply_bytes = 0
        """Largest reply body (0: no limit); a bigger one is an error, not a reply."""
        self.function: str | None = None
        self.version = 0
        self.bound: styles.Bound | None = None
        self.style = "ember"
        self.concurrency = 1
        self.env: dict[str, str] = {}
        self.user_file: str | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._specialized: Reply = {"ok": True}
        """The reply of its specialization: what a fork of its template answers."""
        self.template_fd: int | None = None
        """The connection to serve the template protocol on (`invoker.template`), once this
        instance was specialized as a template; its event loop then stops."""
        self.on_template: Callable[[], None] = lambda: None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    meta, body = await read_frame(reader)
                except asyncio.IncompleteReadError:
                    return
                reply, reply_body = await self.dispatch(meta, body)
                try:
                    frame = encode_frame(reply, reply_body)
                except TypeError as exc:  # e.g. a lone surrogate in a log line
                    reply = {
                        "ok": False,
                        "error": {
                            "type": "ReplyError",
                            "message": f"the reply could not be encoded: {exc}",
                        },
                        "logs": "",
                    }
                    frame = encode_frame(reply, b"")
                if len(reply_body) < SMALL_FRAME_BYTES:
                    writer.write(b"".join(frame))  # one send() instead of three
                else:
                    writer.writelines(frame)
                if writer.transport.get_write_buffer_size() > 1 << 16:
                    await writer.drain()
                if reply.get("template") == "ready":
                    await writer.drain()
                    self.template_fd = os.dup(writer.get_extra_info("socket").fileno())
                    self.on_template()
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("invoker connection failed")
        finally:
            writer.close()

    async def dispatch(self, meta: dict[str, Any], body: bytes) -> tuple[Reply, bytes]:
        op = meta.get("op")
        if op == "invoke":
            return await self.invoke(cast(InvokeRequest, meta), body)
        if op == "ping":
            return {
                "ok": True,
                "function": self.function,
                "version": self.version,
                "pid": os.getpid(),
            }, b""
        if op == "specialize":
            return await self.specialize(cast(SpecializeRequest, meta), body), b""
        if op == "relabel":
            self.version = int(meta["version"])
            if self.bound is not None and self.bound.relabel is not None:
                self.bound.relabel(self.version)
            return {"ok": True}, b""
        error: ErrorInfo = {"type": "ProtocolError", "message": f"unknown op {op!r}"}
        return {"ok": False, "error": error}, b""

    async def specialize(self, meta: SpecializeRequest, code: bytes = b"") -> Reply:
        """Become an instance of one function version: write its code (`code`: the module's
        source, or with meta "code": "zip" a zip of its files; older senders put the source
        in meta["source"]), put its environment's directories (`paths`) on sys.path, import
        `preimport` and then its module."""
        if self.function is not None:
            if not meta.get("template") and (
                meta.get("function"),
                int(meta.get("version", 0)),
            ) == (self.function, self.version):  # forked from its version's template
                return {**self._specialized, "import_ms": 0.0, "logs": "", "template": "forked"}
            return {
                "ok": False,
                "error": {"type": "ProtocolError", "message": "instance is already specialized"},
            }
        started, started_cpu = time.perf_counter(), time.process_time()
        fetched: Fetched | None = None
        filename: str = meta["filename"]
        entry: str = meta.get("entry", "handler")
        self.env = {str(k): str(v) for k, v in meta.get("env", {}).items()}
        # Named after the pid so that the backend can remove it with the instance; in the
        # runtime's temporary directory (the function's --env TMPDIR applies to its code only).
        code_dir = Path(
            tempfile.mkdtemp(prefix=f"ember-fn-{os.getpid()}-", dir=tempfile.gettempdir())
        )
        path = code_dir / filename
        capture = Capture()
        token = current_capture.set(capture)
        try:
            if meta.get("code") == "zip":
                with zipfile.ZipFile(io.BytesIO(code)) as files:
                    files.extractall(code_dir)  # names were checked at deploy
            elif "source" in meta:
                path.write_text(meta["source"])
            else:
                path.write_bytes(code)
            paths = [str(p) for p in meta.get("paths", ())]
            source = meta.pop("environment", None)
            if source is not None:  # before the walls close and any of the function's code
                fetched = await asyncio.to_thread(ensure_environment, source, cache_dir())
                del source  # (its token is of no use to the function)
                paths.insert(0, str(fetched.path))
            # The walls close here, before any of the function's code runs.
            walls_spec: SpecializeSpec = meta.get("sandbox") or {}
            self.walls.specialize(walls_spec, code_dir, paths, MAX_LOG_BYTES)
            os.environ.update(self.env)
            os.chdir(code_dir)  # relative paths (templates, static files) are the function's
            env_zygote.put_first(code_dir, paths)  # (sys.path)
            self.user_file = str(path)
            template = bool(meta.get("template"))
            threads_before = {t.ident or 0 for t in threading.enumerate()} if template else set()
            sockets_before = socket_inodes() if template else set()
            for name in meta.get("preimport", ()):
                importlib.import_module(name)
            style: str = meta.get("style") or "ember"
            settle = before_import(style, entry, filename, str(code_dir), meta)
            module = _import_main(filename, path)
            if style == "auto":
                style, entry, target = detect_style(module, entry)
            else:
                entry = default_entry(module, entry, style)
                target = resolve_entry(module, entry, filename)
            settle(style)
            bound = styles.bind(
                target,
                styles.BindInfo(
                    style=style,
                    entry=entry,
                    module=module,
                    function=meta["function"],
                    version=int(meta.get("version", 0)),
                    memory_mb=int(meta.get("memory_bytes", 0)) >> 20,
                    timeout_s=float(meta.get("timeout_s", 30.0)),
                    options=dict(meta.get("style_options") or {}),
                    max_response_bytes=int(meta.get("max_reply_bytes", 0)),
                ),
            )
            if bound.startup is not None:
                await bound.startup()
            if template:
                refusal = (
                    f"the {style} style has a startup hook"
                    if bound.startup is not None
                    else template_refusal(threads_before, sockets_before)
                )
                if refusal is not None:
                    raise TemplateRefused(f"no template: {refusal}")
        except BaseException as exc:
            self._take_output(capture)
            return {
                "ok": False,
                "error": _error(exc, user_file=self.user_file),
                "logs": capture.text(),
            }
        finally:
            current_capture.reset(token)
        self._take_output(capture)
        self.max_reply_bytes = int(meta.get("max_reply_bytes", 0))
        self.bound = bound
        self.style = style
        self.function = meta["function"]
        self.version = int(meta.get("version", 0))
        self.concurrency = int(meta.get("concurrency", 1))
        if not bound.is_async and self.concurrency > 1:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self.concurrency, thread_name_prefix="handler"
            )
        _limit_memory(int(meta.get("memory_bytes", 0)))
        reply: Reply = {
            "ok": True,
            "import_ms": (time.perf_counter() - started) * 1000,
            "import_cpu_ms": (time.process_time() - started_cpu) * 1000,
            "logs": capture.text(),
            "style": style,
            "entry": entry,
            "style_options": {**dict(meta.get("style_options") or {}), **bound.options},
        }
        if fetched is not None:
            reply["env_fetch_ms"] = fetched.fetch_ms
            reply["env_cached"] = fetched.cached
        self._specialized = {
            "ok": True,
            "style": style,
            "entry": entry,
            "style_options": reply["style_options"],
        }
        if meta.get("template"):
            reply["template"] = "ready"
        return reply

    async def invoke(self, meta: InvokeRequest, body: bytes) -> tuple[Reply, bytes]:
        bound = self.bound
        if bound is None:
            return {
                "ok": False,
                "error": {"type": "ProtocolError", "message": "instance is not specialized"},
            }, b""
        capture = Capture()
        token = current_capture.set(capture)
        try:
            call = styles.Incoming(
                body=body,
                method=meta.get("method", "POST"),
                path=meta.get("path", "/"),
                query=meta.get("query", ""),
                headers=meta.get("headers") or [],  # [name, value] pairs, as sent
                content_type=meta.get("content_type", ""),
                client=meta.get("client", ""),
                source=meta.get("source", "http"),
                topic=meta.get("topic", ""),
                event_id=meta.get("event_id", ""),
                event_time=meta.get("event_time", ""),
                context=Context(
                    function=self.function or "",
                    version=self.version,
                    activation_id=meta.get("id", ""),
                    deadline=time.monotonic() + float(meta.get("timeout_s", 30.0)),
                    method=meta.get("method", "POST"),
                    path=meta.get("path", "/"),
                    query=meta.get("query", ""),
                    headers=dict(meta.get("headers", ())),
                    config=self.env,
                    source=meta.get("source", "http"),
                    topic=meta.get("topic", ""),
                    event_id=meta.get("event_id", ""),
                    message=meta.get("message") or {},
                ),
            )
            try:
                outgoing: styles.Outgoing
                if bound.is_async:
                    outgoing = await bound.run(call)
                elif self._executor is None:
                    outgoing = bound.run(call)
                else:
                    loop = asyncio.get_running_loop()
                    outgoing = await loop.run_in_executor(
                        self._executor, contextvars.copy_context().run, bound.run, call
                    )
                status, headers, out = outgoing
            except styles.BadRequest as exc:
                self._take_output(capture)
                return {
                    "ok": False,
                    "status": 400,
                    "error": {"type": "BadRequest", "message": str(exc)},
                    "logs": capture.text(),
                }, b""
            except (KeyboardInterrupt, asyncio.CancelledError):
                raise
            except BaseException as exc:
                info = _error(exc, user_file=self.user_file)
                capture.write(info.get("traceback", ""))
                info.pop("traceback", None)
                self._take_output(capture)
                return {"ok": False, "error": info, "logs": capture.text()}, b""
            self._take_output(capture)
            if 0 < self.max_reply_bytes < len(out):
                return {
                    "ok": False,
                    "error": {
                        "type": "ResponseTooLarge",
                        "message": f"the handler returned {len(out)} bytes; the limit is "
                        f"{self.max_reply_bytes} bytes (FN_MAX_RESPONSE)",
                        "limit_bytes": self.max_reply_bytes,
                    },
                    "logs": capture.text(),
                }, b""
            return {"ok": True, "status": status, "headers": headers, "logs": capture.text()}, out
        finally:
            current_capture.reset(token)

    async def shut_down(self) -> None:
        """The bound style's shutdown (an ASGI app's lifespan shutdown, a Knative function's
        stop()), when the instance stops; bounded, as the platform kills it after its grace."""
        bound = self.bound
        if bound is None or bound.shutdown is None:
            return
        try:
            await asyncio.wait_for(bound.shutdown(), SHUTDOWN_TIMEOUT_S)
        except Exception:
            log.exception("the function's shutdown failed", extra={"function": self.function})

    def _take_output(self, capture: Capture) -> None:
        """What the function wrote to its file descriptors 1 and 2 (subprocesses included)."""
        output = self.walls.output
        if output is not None:
            text = output.take()
            if text:
                capture.write(text)


class TemplateRefused(Exception):
    """The module left state that forks of a template cannot share (`invoker.template`)."""


def _import_main(filename: str, path: Path) -> Any:
    """Import the function's main module: `handler.py` as `handler`, and a module in a package
    directory (`hello_world/app.py`, as Lambda's handlers name them) as `hello_world.app`, so
    that its relative imports work."""
    if "/" in filename:
        name = filename.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        return importlib.import_module(name)
    module_name = filename.removesuffix(".py")
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        if "no known parent package" not in str(exc):
            raise
        # It imports its sibling modules relatively, as OpenFaaS's templates allow (they
        # import handler.py as function.handler): import it again in such a package.
        del sys.modules[module_name]
        package = importlib.util.module_from_spec(
            importlib.machinery.ModuleSpec("function", None, is_package=True)
        )
        package.__path__ = [str(path.parent)]
        sys.modules["function"] = package
        return importlib.import_module(f"function.{module_name}")
    return module


def _limit_memory(memory_bytes: int) -> None:
    """Cap the address space at the runtime's own footprint plus the function's memory."""
    if memory_bytes <= 0:
        return
    try:
        with open("/proc/self/statm") as f:
            vm_bytes = int(f.read().split()[0]) * resource.getpagesize()
    except OSError:
        return
    limit = vm_bytes + memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


async def _serve(sock: socket.socket, watch_stdin: TextIO | None, runtime: Runtime) -> None:
    stop = asyncio.Event()
    runtime.on_template = stop.set
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server: Acceptor | asyncio.Server
    if runtime.function is not None:  # a fork of a template: its filter denies listen()
        server = Acceptor(sock, runtime.serve)
    elif sock.family == socket.AF_UNIX:
        server = await asyncio.start_unix_server(runtime.serve, sock=sock, limit=1 << 20)
    else:
        server = await asyncio.start_server(runtime.serve, sock=sock, limit=1 << 20)
    if watch_stdin is not None:

        class _Watch(asyncio.Protocol):
            def connection_lost(self, exc: Exception | None) -> None:
                stop.set()

        await loop.connect_read_pipe(_Watch, watch_stdin)
    install_capture()
    async with server:
        await stop.wait()
    if runtime.template_fd is None:
        await runtime.shut_down()


def run_instance(
    sock: socket.socket,
    *,
    watch_stdin: TextIO | None = None,
    walls: Walls | None = None,
    runtime: Runtime | None = None,
) -> None:
    """Serve the wire protocol on an already listening socket until SIGTERM, or until it is
    made a template (then fork instances: `invoker.template`). `runtime`: a fork's, from its
    template."""
    runtime = runtime or Runtime(walls)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        asyncio.run(_serve(sock, watch_stdin, runtime))
    else:
        uvloop.run(_serve(sock, watch_stdin, runtime))
    if runtime.template_fd is not None:
        sock.close()
        control = socket.socket(fileno=runtime.template_fd)
        runtime.template_fd = None  # (in its forks)
        serve = functools.partial(run_instance, runtime=runtime)
        serve_template(control, Fork(runtime.walls, MAX_LOG_BYTES, serve))
