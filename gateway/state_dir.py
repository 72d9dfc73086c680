"""One platform per state dir: an exclusive `flock` on `<state_dir>/lock`, held for the life
of the process (the kernel lets go when it exits, however it exits).

A second platform on a state dir in use is refused with the first one's pid and address, before
it starts anything: it would share the embedded Postgres, overwrite `gateway.json` and replay the
first one's activation spool. Holding the lock also tells a platform that no earlier run on this
state dir is alive, so it may release that run's delivery claims at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from pathlib import Path

LOCK_FILE = "lock"
ADDRESS_FILE = "gateway.json"


class StateDirInUse(Exception):
    """Another platform holds the state dir's lock."""


class StateDirLock:
    def __init__(self, state_dir: Path, fd: int) -> None:
        self.state_dir = state_dir
        self._fd = fd

    @property
    def home(self) -> str:
        """This state dir on this host: where at most one platform runs at a time."""
        return f"{socket.gethostname()}:{self.state_dir.resolve()}"

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # (the file stays: removing it would race a starting platform)
            self._fd = -1


def lock_state_dir(state_dir: Path) -> StateDirLock:
    """Take the state dir's lock, or raise `StateDirInUse` naming the platform that has it."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / LOCK_FILE
    # O_CLOEXEC: processes the platform starts must not inherit (and keep) the lock.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _describe_holder(state_dir, fd)
        os.close(fd)
        raise StateDirInUse(
            f"the state dir {state_dir} is in use by another platform ({holder}); stop that one "
            f"first, or give this one a state dir of its own (--state-dir or FN_STATE_DIR)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return StateDirLock(state_dir, fd)


def _describe_holder(state_dir: Path, fd: int) -> str:
    """Who holds the lock, as far as the lock and address files tell: "pid 123, <url>"."""
    pid = os.pread(fd, 64, 0).decode(errors="replace").strip()
    url = None
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        address = json.loads((state_dir / ADDRESS_FILE).read_text())
        if not pid or str(address["pid"]) == pid:
            url = str(address["url"])
            pid = pid or str(address["pid"])
    parts = [f"pid {pid}" if pid else "pid unknown", url or "not serving HTTP yet"]
    return ", ".join(parts)
