"""How `fn` prints: each command's result through `emit` (JSON with --json, else the
command's own rendering for people), tables, and the one way to fail: `fn: ...` on stderr, exit 1.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(
        func
    )


WIDE = {"on": False}
"""Set by --wide: tables as wide as their content, on a terminal too."""


def wide_option(func: F) -> F:
    """`--wide`: no column of a table is wrapped or cut to fit the terminal."""

    def turn_on(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        WIDE["on"] = WIDE["on"] or value

    return click.option(
        "--wide",
        is_flag=True,
        expose_value=False,
        callback=turn_on,
        help="Print tables as wide as their content (nothing wrapped or cut).",
    )(func)


def emit(
    data: T,
    as_json: bool,
    render: Callable[[T], None],
    *,
    to_json: Callable[[T], Any] | None = None,
) -> None:
    """Print a command's result: as JSON with --json, else through `render` for people.

    `to_json` shapes the JSON when it is not `data` itself; it runs only with --json.
    """
    if as_json:
        shaped = data if to_json is None else to_json(data)
        click.echo(json.dumps(shaped, indent=2, sort_keys=True))
    else:
        render(data)


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, whole: Sequence[str] = ("ID",)
) -> None:
    """Rows under headers. The columns named in `whole` (ids, to paste into the next command)
    are never cut or wrapped. Into a pipe or a file (not a terminal), or with --wide, the table
    is as wide as its content: nothing is cut to fit a width no one sees."""
    from rich.console import Console
    from rich.table import Table

    cells = [["" if v is None else shown(str(v)) for v in row] for row in rows]
    console = Console(soft_wrap=True)
    piped = not console.is_terminal or WIDE["on"]
    if piped:
        console = Console(soft_wrap=True, width=1_000_000)
    table = Table(box=None, pad_edge=False, header_style="bold")
    for i, header in enumerate(headers):
        if header in whole:
            width = max([len(header), *(len(row[i]) for row in cells)])
            table.add_column(header, no_wrap=True, min_width=width)
        else:
            table.add_column(header)
    for row in cells:
        table.add_row(*row)
    if not piped:
        console.print(table)
        return
    with console.capture() as captured:
        console.print(table)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


@contextmanager
def progress(description: str) -> Iterator[None]:
    """A spinner with the time elapsed on stderr while something long runs (a build), on a
    terminal; elsewhere the description once, as a line."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        click.echo(description, err=True)
        yield
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        bar.add_task(description, total=None)
        yield


def fail(message: str) -> NoReturn:
    click.echo(shown(f"fn: {message}", err=True), err=True)  # (may quote a function's output)
    raise SystemExit(1)


_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""What a terminal acts on rather than shows (escape sequences start with ESC or a C1 byte);
newlines and tabs stay."""


def shown(text: str, *, err: bool = False) -> str:
    """Text a function wrote (its logs, errors, results), made safe to print: on a terminal
    its control characters are shown as escapes (`\\x1b`), so that it cannot move the
    cursor, rewrite the lines `fn` printed, set the window's title or the clipboard; into a
    pipe or a file it is as it came."""
    stream = sys.stderr if err else sys.stdout
    if not stream.isatty():
        return text
    text = text.replace("\r\n", "\n")  # (a line's end, whatever wrote it)
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def heading(text: str) -> str:
    """A line `fn` writes between a function's lines (an activation's header): bold on a
    terminal, which a function's own output cannot be (`shown`)."""
    return click.style(text, bold=True)
