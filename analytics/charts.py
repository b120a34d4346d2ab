"""Small server-side SVG charts for the admin dashboard: no JavaScript, no CDN, works offline.

Each function returns a complete ``<svg>`` element as a safe string. Text and axes use ``currentColor``
so the charts follow the admin's light or dark theme; every bar carries a ``<title>`` (a native
tooltip with the exact figure). All text passed in is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# Tableau 10, reordered so that the first colours a few providers get are not the red and green that
# mean "failed" and "ok" elsewhere on the page.
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#76b7b2",
    "#b07aa1",
    "#edc948",
    "#9c755f",
    "#ff9da7",
    "#bab0ac",
    "#59a14f",
    "#e15759",
)
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:12px"


@dataclass(frozen=True)
class Series:
    name: str
    color: str
    values: Sequence[float]


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    color: str
    note: str = ""  # shown right of the bar
    tooltip: str = ""


@dataclass(frozen=True)
class Range:
    label: str
    low: float  # e.g. p50, drawn dark
    high: float  # e.g. p95, drawn light behind it
    color: str
    note: str = ""


def color_for(names: Sequence[str]) -> dict[str, str]:
    """A stable colour per name (sorted, so a provider keeps its colour across charts on a page)."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(set(names)))}


def compact(value: float) -> str:
    """1234 → 1.2k, 2500000 → 2.5M."""
    value = float(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            scaled = value / limit
            return f"{scaled:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def nice_ticks(maximum: float, count: int = 4) -> list[float]:
    """0 … a round number ≥ maximum in steps of 1, 2, 2.5 or 5 × 10^k."""
    if maximum <= 0:
        return [0.0, 1.0]
    raw = maximum / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    top = math.ceil(maximum / step) * step
    return [i * step for i in range(int(round(top / step)) + 1)]


def _svg(width: int, height: int, body: list[str], title: str) -> SafeString:
    return mark_safe(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'style="max-width:{width}px;{FONT}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


def _legend(items: Sequence[tuple[str, str]], x: float, y: float, max_width: float) -> list[str]:
    out, cx, cy = [], x, y
    for name, color in items:
        item_width = 18 + 7 * len(name) + 16
        if cx + item_width > x + max_width and cx > x:
            cx, cy = x, cy + 18
        out.append(f'<rect x="{cx:.1f}" y="{cy - 9:.1f}" width="11" height="11" rx="2" fill="{color}"/>')
        out.append(f'<text x="{cx + 16:.1f}" y="{cy:.1f}" fill="currentColor">{escape(name)}</text>')
        cx += item_width
    return out


def _legend_height(items: Sequence[tuple[str, str]], max_width: float) -> int:
    rows, cx = 1, 0.0
    for name, _ in items:
        item_width = 18 + 7 * len(name) + 16
        if cx + item_width > max_width and cx > 0:
            rows, cx = rows + 1, 0.0
        cx += item_width
    return rows * 18


def stacked_bars(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    width: int = 960,
    height: int = 260,
    fmt: Callable[[float], str] = compact,
) -> SafeString:
    """Vertical bars, one per label, each stacked from the series in order (first at the bottom)."""
    series = [s for s in series if any(s.values)]
    left, right, bottom = 52, 12, 34
    legend = [(s.name, s.color) for s in series]
    top = 12 + _legend_height(legend, width - left - right) + 8
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    ticks = nice_ticks(max(totals, default=0))
    scale = plot_h / ticks[-1]
    body = _legend(legend, left, 22, plot_w)
    for tick in ticks:
        y = top + plot_h - tick * scale
        body.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="currentColor" '
            f'stroke-opacity="{0.35 if tick == 0 else 0.12}"/>'
        )
        body.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="currentColor" '
            f'fill-opacity="0.7">{escape(fmt(tick))}</text>'
        )
    n = max(len(labels), 1)
    slot = plot_w / n
    bar_w = max(1.0, slot * 0.78)
    label_every = max(1, math.ceil(n / max(1, plot_w // 64)))
    for i, label in enumerate(labels):
        x = left + i * slot + (slot - bar_w) / 2
        y = top + plot_h
        for s in series:
            value = s.values[i]
            if not value:
                continue
            h = value * scale
            y -= h
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{s.color}">'
                f"<title>{escape(label)} · {escape(s.name)}: {escape(fmt(value))}</title></rect>"
            )
        if totals[i]:
            # The whole bar's figure as a tooltip on an invisible cap, so the sum is one hover away.
            body.append(
                f'<rect x="{x:.1f}" y="{top}" width="{bar_w:.1f}" height="{max(0.0, y - top):.1f}" '
                f'fill="transparent"><title>{escape(label)}: {escape(fmt(totals[i]))} in all</title></rect>'
            )
        if i % label_every == 0:
            body.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 18}" text-anchor="middle" '
                f'fill="currentColor" fill-opacity="0.7">{escape(label)}</text>'
            )
    if not any(totals):
        body.append(_empty(left + plot_w / 2, top + plot_h / 2))
    return _svg(width, height, body, title)


def horizontal_bars(
    bars: Sequence[Bar], *, title: str, width: int = 540, label_width: int = 110, note_width: int = 160
) -> SafeString:
    """One labelled bar per row, scaled to the largest value, with a note (figures) to its right."""
    row_h, top = 26, 6
    height = top + row_h * max(len(bars), 1) + 6
    bar_area = width - label_width - note_width - 16
    maximum = max((b.value for b in bars), default=0) or 1
    body: list[str] = []
    for i, bar in enumerate(bars):
        y = top + i * row_h
        w = max(1.0, bar.value / maximum * bar_area) if bar.value else 0.0
        body.append(
            f'<text x="{label_width - 8}" y="{y + 16}" text-anchor="end" fill="currentColor">'
            f"{escape(_clip(bar.label, label_width))}<title>{escape(bar.label)}</title></text>"
        )
        body.append(
            f'<rect x="{label_width}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" rx="2" fill="{bar.color}">'
            f"<title>{escape(bar.tooltip or bar.label)}</title></rect>"
        )
        body.append(
            f'<text x="{label_width + w + 6:.1f}" y="{y + 16}" fill="currentColor" fill-opacity="0.8">'
            f"{escape(bar.note)}</text>"
        )
    if not bars:
        body.append(_empty(width / 2, height / 2 + 4))
    return _svg(width, height, body, title)


def range_bars(
    ranges: Sequence[Range],
    *,
    title: str,
    low_name: str = "p50",
    high_name: str = "p95",
    unit: str = "ms",
    width: int = 540,
    label_width: int = 110,
) -> SafeString:
    """Per row a light bar to ``high`` with a dark bar to ``low`` on top: two percentiles at a glance."""
    row_h, top, axis_h = 26, 26, 22
    height = top + row_h * max(len(ranges), 1) + axis_h
    plot_w = width - label_width - 20
    ticks = nice_ticks(max((r.high for r in ranges), default=0))
    scale = plot_w / ticks[-1]
    body = [
        f'<rect x="{label_width}" y="5" width="11" height="11" rx="2" fill="currentColor" fill-opacity="0.8"/>',
        f'<text x="{label_width + 16}" y="14" fill="currentColor">{escape(low_name)}</text>',
        f'<rect x="{label_width + 60}" y="5" width="11" height="11" rx="2" fill="currentColor" fill-opacity="0.3"/>',
        f'<text x="{label_width + 76}" y="14" fill="currentColor">{escape(high_name)}</text>',
        f'<text x="{width - 4}" y="14" text-anchor="end" fill="currentColor" fill-opacity="0.7">'
        f"in {escape(unit)}</text>",
    ]
    plot_bottom = top + row_h * max(len(ranges), 1)
    for tick in ticks:
        x = label_width + tick * scale
        body.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{plot_bottom}" stroke="currentColor" '
            f'stroke-opacity="{0.35 if tick == 0 else 0.12}"/>'
        )
        body.append(
            f'<text x="{x:.1f}" y="{plot_bottom + 16}" text-anchor="middle" fill="currentColor" '
            f'fill-opacity="0.7">{escape(compact(tick))}</text>'
        )
    for i, r in enumerate(ranges):
        y = top + i * row_h
        tip = f"{r.label}: {low_name} {compact(r.low)} {unit}, {high_name} {compact(r.high)} {unit}"
        if r.note:
            tip += f" ({r.note})"
        body.append(
            f'<text x="{label_width - 8}" y="{y + 16}" text-anchor="end" fill="currentColor">'
            f"{escape(_clip(r.label, label_width))}</text>"
        )
        body.append(
            f'<rect x="{label_width}" y="{y + 5}" width="{max(1.0, r.high * scale):.1f}" height="{row_h - 10}" '
            f'rx="2" fill="{r.color}" fill-opacity="0.35"><title>{escape(tip)}</title></rect>'
        )
        body.append(
            f'<rect x="{label_width}" y="{y + 8}" width="{max(1.0, r.low * scale):.1f}" height="{row_h - 16}" '
            f'rx="2" fill="{r.color}"><title>{escape(tip)}</title></rect>'
        )
    if not ranges:
        body.append(_empty(width / 2, top + row_h / 2 + 4))
    return _svg(width, height, body, title)


def _clip(text: str, pixels: int) -> str:
    room = max(4, (pixels - 10) // 7)
    return text if len(text) <= room else text[: room - 1] + "…"


def _empty(x: float, y: float) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="middle" fill="currentColor" fill-opacity="0.6">'
        "No requests in this period</text>"
    )
