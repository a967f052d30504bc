"""Inline SVG charts for the HTML report: self-contained, no scripts, no external resources."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

WIDTH = 760
LABEL_WIDTH = 230
VALUE_WIDTH = 90
BAR_HEIGHT = 18
GAP = 6
TOP = 34
PALETTE = ("#1f5f99", "#c0392b", "#2e8b57", "#d68910", "#7d3c98", "#17807e", "#7f8c8d")


def _truncate(text: str, limit: int = 34) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def bar_chart(title: str, rows: Sequence[tuple[str, float]], *, fmt: Callable[[float], str],
              maximum: float | None = None, lines: Sequence[tuple[float, str]] = (),
              chart_id: str = "", color: str = PALETTE[0]) -> str:
    """A horizontal bar chart; `lines` are reference lines (e.g. plan targets) as (value, caption)."""
    top = maximum if maximum is not None else max((v for _, v in rows), default=0.0)
    top = top or 1.0
    area = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    height = TOP + len(rows) * (BAR_HEIGHT + GAP) + 24
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}"' + (f' id="{escape(chart_id)}"' if chart_id else "") + ">",
           f"<title>{escape(title)}</title>",
           f'<text x="0" y="18" class="chart-title" font-size="14" font-weight="bold">{escape(title)}</text>']
    for i, (label, value) in enumerate(rows):
        y = TOP + i * (BAR_HEIGHT + GAP)
        length = max(0.0, min(value, top)) / top * area
        out.append(f'<text x="{LABEL_WIDTH - 8}" y="{y + BAR_HEIGHT - 5}" text-anchor="end" font-size="12">'
                   f"<title>{escape(label)}</title>{escape(_truncate(label))}</text>")
        out.append(f'<rect x="{LABEL_WIDTH}" y="{y}" width="{length:.1f}" height="{BAR_HEIGHT}" fill="{color}">'
                   f"<title>{escape(label)}: {escape(fmt(value))}</title></rect>")
        out.append(f'<text x="{LABEL_WIDTH + length + 6:.1f}" y="{y + BAR_HEIGHT - 5}" font-size="12">'
                   f"{escape(fmt(value))}</text>")
    bottom = TOP + len(rows) * (BAR_HEIGHT + GAP)
    out.append(f'<line x1="{LABEL_WIDTH}" y1="{TOP - 4}" x2="{LABEL_WIDTH}" y2="{bottom}" stroke="#333"/>')
    for value, caption in lines:
        x = LABEL_WIDTH + min(value, top) / top * area
        out.append(f'<line x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" y2="{bottom}" stroke="#c0392b" '
                   f'stroke-dasharray="4 3"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" font-size="11" fill="#c0392b">'
                   f"{escape(caption)}</text>")
    out.append("</svg>")
    return "".join(out)
