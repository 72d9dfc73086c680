"""An environment's zygote: a fork of the runtime zygote that has imported the packages of one
environment the operator declared trusted, and forks that environment's instances.

It runs before any wall and before any function code, as the runtime zygote does (its scrubbed
environment: no secrets, no token), so only code the operator trusted runs in a process that
later builds other functions' walls (docs/security.md). Here it:

- puts the environment's directory on `sys.path` and imports its top-level packages, with no
  network at all when it can make a network namespace (as root) and returns to the host's
  after; thread pools that numeric libraries start at import are held to one thread
  (`THREAD_VARIABLES`);
- refuses (the zygote is not made, the environment's instances import as before) when the
  imports left a thread running, a file descriptor open, writable shared memory mapped or a
  process running: a fork has no copy of another thread; two processes on one descriptor
  share its offset or its connection; a shared mapping (`mmap.mmap(-1, n)`, a
  `multiprocessing` lock) is one memory for every fork, of every function, so a channel
  between them that no wall closes; and a process started by the imports runs as root outside
  every wall (it is killed);
- freezes what it loaded out of the garbage collector's reach, so forks keep sharing its pages.

What a fork must not share with its siblings is handled in each fork as for templates
(`invoker.template.reseed`: numpy's global generator; `random` reseeds itself at fork). A
function's own modules come first, as without the zygote: `put_first` forgets the imported
packages its files shadow.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from invoker.linux import CLONE_NEWNET, check, libc, unshare

THREAD_VARIABLES = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
"""Set to 1 before the imports (OpenBLAS and OpenMP start their pools at import otherwise);
the forks keep them: an instance has one CPU unless --cpus says more."""


_PR_SET_CHILD_SUBREAPER = 36


class EnvironmentRefused(Exception):
    """The environment's imports left state that forks cannot share: no zygote for it."""


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _shared_writable() -> set[str]:
    """Writable shared mappings (address range and what is mapped): what forks would share."""
    with open("/proc/self/maps") as maps:
        return {
            " ".join(fields[:1] + fields[5:])
            for fields in (line.split() for line in maps)
            if len(fields) >= 5 and fields[1][1] == "w" and fields[1][3] == "s"
        }


def _children() -> set[int]:
    """This process's children (a daemon that double-forked is one too: we are a
    subreaper while the imports run)."""
    found: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/children") as f:
            found.update(int(pid) for pid in f.read().split())
    return found


@contextlib.contextmanager
def _no_network() -> Iterator[None]:
    """A network namespace with nothing in it for the imports, as root; then the host's again
    (the forks need it for --network egress). Not root: the platform's network (reported)."""
    if os.geteuid() != 0:
        yield
        return
    host = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        unshare(CLONE_NEWNET)
        try:
            yield
        finally:
            check(libc().setns(host, CLONE_NEWNET), "setns")
    finally:
        os.close(host)


def prepare(path: str, modules: list[str]) -> dict[str, object]:
    """Import `modules` from the environment at `path` into this process; returns what was
    imported and what failed to (skipped: the function imports it itself). Raises
    EnvironmentRefused."""
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    sys.path.insert(0, path)
    fds, threads, shared = _open_fds(), _threads(), _shared_writable()
    imported: list[str] = []
    skipped: dict[str, str] = {}
    check(libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "subreaper")
    try:
        with _no_network():
            for name in modules:
                try:
                    importlib.import_module(name)
                except (Exception, SystemExit) as exc:
                    skipped[name] = f"{type(exc).__name__}: {exc}"[:200]
                else:
                    imported.append(name)
        processes = _children()
    finally:
        libc().prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    if processes:
        for pid in processes:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        raise EnvironmentRefused(
            f"importing {', '.join(modules)} started {len(processes)} process(es): they would "
            "run as root outside every wall (killed)"
        )
    if not imported:
        raise EnvironmentRefused(f"none of {', '.join(modules)} could be imported: {skipped}"[:400])
    started = _threads() - threads
    if started > 0 or threading.active_count() > 1:
        names = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        raise EnvironmentRefused(
            f"importing {', '.join(modules)} started {max(started, len(names))} thread(s) "
            f"({', '.join(names) or 'native'}): a fork would have none of them"
        )
    mapped = _shared_writable() - shared
    if mapped:
        raise EnvironmentRefused(
            f"importing {', '.join(modules)} mapped {len(mapped)} writable shared memory "
            f"region(s) ({', '.join(sorted(mapped))[:200]}): every fork would share them"
        )
    opened = _open_fds() - fds
    if opened:
        links = []
        for fd in sorted(opened):
            with contextlib.suppress(OSError):
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
        raise EnvironmentRefused(
            f"importing {', '.join(modules)} left {len(opened)} file descriptor(s) open "
            f"({', '.join(links)[:200]}): forks would share them"
        )
    gc.collect()
    gc.freeze()
    return {"imported": imported, "skipped": skipped}


def put_first(code_dir: Path, paths: list[str]) -> None:
    """Put a function's code, then its environment, first on `sys.path`. Modules imported
    from the environment (by its zygote) that the function's own files name too, like its
    `helpers.py` beside a package `helpers`, are forgotten: it imports its own, as it would
    without the zygote."""
    sys.path[:0] = [str(code_dir), *paths]
    own = {
        p.name.removesuffix(".py") for p in code_dir.iterdir() if p.suffix == ".py" or p.is_dir()
    }
    roots = tuple(os.path.join(os.path.realpath(p), "") for p in paths)
    if not roots:
        return
    for name in [n for n in sys.modules if n.partition(".")[0] in own]:
        module = sys.modules[name]
        where = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), "")
        if where and os.path.realpath(where).startswith(roots):
            del sys.modules[name]
