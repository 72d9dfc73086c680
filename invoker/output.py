"""An instance's file descriptors 1 and 2, captured into the activation's logs."""

from __future__ import annotations

import os
import select
import sys
import threading


class OutputCapture:
    """The instance's file descriptors 1 and 2 go into a pipe that a thread drains into a
    bounded buffer; each call takes what arrived by its end into its logs. Output of
    subprocesses and `os.write(1, ...)` thus lands in the activation's logs, capped, and never
    in the platform's log (nor can it fill a pipe and block the writer)."""

    def __init__(self, max_bytes: int) -> None:
        """Made in the generic instance (a thread start is not free); `attach` at
        specialization (the seccomp filter, synchronized to every thread, covers it)."""
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._parts: list[bytes] = []
        self._size = 0
        self._dropped = 0
        read_fd, self._write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        self._read_fd = read_fd
        threading.Thread(target=self._drain, name="output capture", daemon=True).start()

    def attach(self) -> None:
        """From now on, file descriptors 1 and 2 write into the pipe."""
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._write_fd, 1)
        os.dup2(self._write_fd, 2)
        os.close(self._write_fd)

    def _drain(self) -> None:
        poller = select.poll()
        poller.register(self._read_fd, select.POLLIN)
        while True:
            poller.poll()
            with self._lock:
                if not self._read_available():
                    return

    def _read_available(self) -> bool:
        """Read what is in the pipe now (holding the lock); False once it is closed."""
        while True:
            try:
                chunk = os.read(self._read_fd, 65536)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False
            if not chunk:
                return False
            room = self.max_bytes - self._size
            if room > 0:
                self._parts.append(chunk[:room])
                self._size += min(room, len(chunk))
            self._dropped += max(0, len(chunk) - max(room, 0))

    def take(self) -> str:
        """What was written since the last call, decoded; a note says what was dropped."""
        with self._lock:
            self._read_available()
            data, dropped = b"".join(self._parts), self._dropped
            self._parts, self._size, self._dropped = [], 0, 0
        text = data.decode("utf-8", "replace")
        if dropped:
            text += f"\n[{dropped} bytes of output dropped past {self.max_bytes} bytes]\n"
        return text
