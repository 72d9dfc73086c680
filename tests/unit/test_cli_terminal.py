"""What a function writes cannot act on the terminal `fn` prints it to."""

from __future__ import annotations

import io
import os
import sys
from typing import Any

import pytest

from fn.cli.activations import _print_activation, print_delivery

ACTIVATION = {
    "started_at": "2026-12-01T09:00:00.000",
    "id": "01a1fc80-af7f-70c2-abd5-146320013334",
    "version": 1,
    "status": "error",
    "http_status": 500,
    "duration_ms": 1.5,
    "cold": False,
    "error": {"type": "ValueError", "message": "bad\x1b]0;pwned\x07"},
    # erase the line, then forge a header; set the clipboard (OSC 52)
    "logs": "\x1b[2K\r--- 2026-12-01T09:00:00.000 fake v1 success HTTP 200\x1b]52;c;aGk=\x07\r\n",
}


def printed(monkeypatch: pytest.MonkeyPatch, show: Any, *args: Any) -> str:
    """What `show(*args)` writes to a real terminal (a pseudo-terminal's other end)."""
    leader, follower = os.openpty()
    tty = io.TextIOWrapper(io.FileIO(follower, "w", closefd=True), write_through=True)
    monkeypatch.setattr(sys, "stdout", tty)
    try:
        show(*args)
    finally:
        tty.close()
    out = b""
    while chunk := _read(leader):
        out += chunk
    os.close(leader)
    return out.decode()


def _read(fd: int) -> bytes:
    import select

    if not select.select([fd], [], [], 0)[0]:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:  # the other end closed
        return b""


def test_a_functions_escape_sequences_are_shown_not_acted_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = printed(monkeypatch, _print_activation, ACTIVATION)
    assert "\x1b]" not in out  # no title, no clipboard
    assert "\x1b[2K" not in out  # no line erased
    assert "\\x1b[2K\\x0d--- 2026-12-01T09:00:00.000 fake" in out
    assert "bad\\x1b]0;pwned\\x07" in out
    # fn's own header is bold there, which a function's text cannot be
    assert "\x1b[1m--- 2026-12-01T09:00:00.000 01a1fc80" in out
    delivery = {
        "id": "d1",
        "function": "f",
        "source": "topic",
        "status": "failed",
        "attempts": 1,
        "finished_at": "2026-12-01T09:00:00.000",
        "error": {"type": "E", "message": "\x9b2J"},
        "result": "\x1b[31mred",
        "logs": "",
    }
    out = printed(monkeypatch, print_delivery, delivery)
    assert "\\x9b2J" in out
    assert "\\x1b[31mred" in out


def test_into_a_pipe_the_text_is_as_it_came(capsys: pytest.CaptureFixture[str]) -> None:
    _print_activation(ACTIVATION)
    out = capsys.readouterr().out
    assert "\x1b]52;c;aGk=\x07" in out
    assert out.startswith("--- 2026-12-01T09:00:00.000 01a1fc80")  # no styling either


def test_tables_and_failures_show_escapes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from fn.cli.output import fail, print_table

    out = printed(monkeypatch, print_table, ["ID", "ERROR"], [["a1", "boom\x1b[2J\x1b]0;t\x1b\\"]])
    assert "\x1b[2J" not in out
    assert "\\x1b[2J" in out

    def failing() -> None:
        with pytest.raises(SystemExit):
            fail("import failed: \x1b[2K\rfake")

    leader, follower = os.openpty()
    tty = io.TextIOWrapper(io.FileIO(follower, "w", closefd=True), write_through=True)
    monkeypatch.setattr(sys, "stderr", tty)
    try:
        failing()
    finally:
        tty.close()
    err = _read(leader).decode()
    os.close(leader)
    assert "\x1b[2K" not in err
    assert "fn: import failed: \\x1b[2K\\x0dfake" in err
