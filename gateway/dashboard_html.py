"""The dashboard's HTML, rendered on the server from plain data (no template engine, no build
step): the page frame, tables, and charts drawn as inline SVG. Everything from the platform
passes through `esc`; the page's script (`static/ui.js`) only adds what is live."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any


def esc(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def page(title: str, body: str, *, csrf: str = "", nav: bool = True) -> str:
    links = (
        '<nav><a href="/ui">Functions</a><a href="/ui#pool">Pool</a>'
        '<a href="/ui#triggers">Triggers</a><a href="/ui#dead">Dead letters</a>'
        '<a href="/v1/docs">API</a>'
        '<form method="post" action="/ui/logout" class="inline">'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
        '<button class="link">Log out</button></form></nav>'
        if nav
        else ""
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)} · Ember</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="csrf" content="{esc(csrf)}">'
        '<link rel="stylesheet" href="/ui/static/ui.css">'
        '<script src="/ui/static/ui.js" defer></script></head><body>'
        f'<header><a class="brand" href="/ui">Ember</a>{links}</header>'
        f"<main>{body}</main></body></html>"
    )


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    id: str = "",
    empty: str = "nothing yet",
    raw: bool = False,
) -> str:
    """Cells are escaped unless `raw` (the caller built them from escaped parts)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if raw else esc(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    if not body:
        body = f'<tr class="empty"><td colspan="{len(headers)}">{esc(empty)}</td></tr>'
    ident = f' id="{esc(id)}"' if id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def definition(pairs: Iterable[tuple[str, Any]]) -> str:
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs) + "</dl>"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def size(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / (1 << 20):.1f} MiB"


def line_chart(
    title: str,
    xs: Sequence[str],
    series: dict[str, Sequence[float]],
    *,
    unit: str = "",
    width: int = 560,
    height: int = 160,
) -> str:
    """Lines over time, one per series, with the maximum on the axis: an inline SVG."""
    colours = ["#1d5fbf", "#b3261e", "#a06400", "#1b7f3b", "#6b3fa0"]
    top = max([v for values in series.values() for v in values] + [1.0])
    pad_l, pad_b = 56, 20
    plot_w, plot_h = width - pad_l - 8, height - pad_b - 8
    n = max(len(xs), 2)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{esc(title)}"><title>{esc(title)}</title>',
        f'<line x1="{pad_l}" y1="8" x2="{pad_l}" y2="{8 + plot_h}" class="axis"/>',
        f'<line x1="{pad_l}" y1="{8 + plot_h}" x2="{width - 8}" y2="{8 + plot_h}" class="axis"/>',
        f'<text x="{pad_l - 4}" y="14" class="tick" text-anchor="end">{top:.3g}{esc(unit)}</text>',
        f'<text x="{pad_l - 4}" y="{8 + plot_h}" class="tick" text-anchor="end">0</text>',
    ]
    if xs:
        parts.append(f'<text x="{pad_l}" y="{height - 4}" class="tick">{esc(xs[0][11:16])}</text>')
        parts.append(
            f'<text x="{width - 8}" y="{height - 4}" class="tick" text-anchor="end">'
            f"{esc(xs[-1][11:16])}</text>"
        )
    legend_x = pad_l + 8
    for i, (name, values) in enumerate(series.items()):
        colour = colours[i % len(colours)]
        points = " ".join(
            f"{pad_l + plot_w * j / (n - 1):.1f},{8 + plot_h - plot_h * v / top:.1f}"
            for j, v in enumerate(values)
        )
        if len(values) == 1:
            x, y = points.split(",")
            parts.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>')
        elif values:
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}"/>')
        parts.append(
            f'<text x="{legend_x}" y="20" class="legend" fill="{colour}">{esc(name)}</text>'
        )
        legend_x += 8 + 7 * len(name)
    parts.append("</svg>")
    return f"<figure><figcaption>{esc(title)}</figcaption>{''.join(parts)}</figure>"


def tradeoff_plot(results: Sequence[dict[str, Any]], *, width: int = 560, height: int = 260) -> str:
    """The simulator's trade-off: cold-start rate against idle memory, one point per policy
    (the oracle too), as `fn policy simulate --plot` draws it."""
    if not results:
        return '<p class="muted">No calls in that window to simulate.</p>'
    pad_l, pad_b, pad_t, pad_r = 56, 36, 12, 16
    plot_w, plot_h = width - pad_l - pad_r, height - pad_b - pad_t
    top_x = max([r["idle_gb_s"] for r in results] + [1e-9]) * 1.1
    top_y = max([r["cold_rate"] for r in results] + [1e-9]) * 1.1
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="cold-start rate against idle memory">',
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + plot_h}" class="axis"/>',
        f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width - pad_r}" '
        f'y2="{pad_t + plot_h}" class="axis"/>',
        f'<text x="{pad_l + plot_w / 2}" y="{height - 4}" class="tick" text-anchor="middle">'
        f"idle memory (GB-s), max {top_x:.3g}</text>",
        f'<text x="12" y="{pad_t + plot_h / 2}" class="tick" text-anchor="middle" '
        f'transform="rotate(-90 12 {pad_t + plot_h / 2})">cold-start rate, max {top_y:.2%}</text>',
    ]
    for r in results:
        x = pad_l + plot_w * r["idle_gb_s"] / top_x
        y = pad_t + plot_h - plot_h * r["cold_rate"] / top_y
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" class="point"/>')
        parts.append(
            f'<text x="{x + 6:.1f}" y="{y - 6:.1f}" class="legend">{esc(r["policy"])}</text>'
        )
    parts.append("</svg>")
    rows = [
        (r["policy"], r["calls"], r["cold"], f"{r['cold_rate']:.2%}", f"{r['idle_gb_s']:.4g}")
        for r in results
    ]
    headers = ["policy", "calls", "cold starts", "cold-start rate", "idle GB-s"]
    return "".join(parts) + table(headers, [[str(c) for c in row] for row in rows])
