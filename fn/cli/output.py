"""How `fn` prints: each command's result through `emit` (JSON with --json, else the
command's own rendering for people), tables, and the one way to fail: `fn: ...` on stderr, exit 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(
        func
    )


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


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console(soft_wrap=True).print(table)


def fail(message: str) -> NoReturn:
    click.echo(f"fn: {message}", err=True)
    raise SystemExit(1)
