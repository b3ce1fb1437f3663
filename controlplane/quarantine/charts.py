"""Server-side SVG charts of the weekly quarantine review: pure functions from numbers to SVG text.

No JavaScript library and nothing fetched: the page reads without JavaScript, prints, and the figures
are in the markup. Every cell and point carries its figures in a ``<title>`` (the browser's tooltip) and
an ``aria-label`` (read by screen readers as an image with that name), and every value is also printed
as text beside the colour, so colour is never the only cue. All text put into the SVG is escaped here;
the callers mark the result safe.

Colours are levels of the rate against the source's threshold (``rate_level``): ``empty`` (no valid
rows that day: no rate), ``ok`` (at most half the threshold), ``near`` (up to the threshold), ``over``
(above it) and ``escalate`` (above the escalation rate, when given).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

LEVELS = ("empty", "ok", "near", "over", "escalate")
FILL = {
    "empty": "#eaeef2",
    "ok": "#dafbe1",
    "near": "#aceebb",
    "over": "#ffb77c",
    "escalate": "#ff8182",
}
LEVEL_TEXT = {
    "empty": "no valid rows",
    "ok": "at most half the threshold",
    "near": "under the threshold",
    "over": "over the threshold",
    "escalate": "over the escalation rate",
}


@dataclass(frozen=True)
class HeatCell:
    """One (table, day) of the heat map: counts and the rate in percent (None when there were no valid rows)."""

    table: str
    date: str
    valid: int
    quarantined: int
    rate: float | None


@dataclass(frozen=True)
class TrendPoint:
    """One week of a table's trend: the week's last day (ISO) and its rate in percent (None: no valid rows)."""

    week_end: str
    rate: float | None
    quarantined: int = 0
    valid: int = 0


def rate_level(rate: float | None, threshold: float, escalate: float | None = None) -> str:
    """The colour level of ``rate`` (percent) against ``threshold`` and, if given, the escalation rate."""
    if rate is None:
        return "empty"
    if escalate is not None and rate > escalate:
        return "escalate"
    if rate > threshold:
        return "over"
    if rate > threshold / 2:
        return "near"
    return "ok"


def fmt_rate(rate: float | None) -> str:
    """A rate as people read it: ``6.17%``, ``0.05%``, ``—`` for none."""
    if rate is None:
        return "—"
    if rate == 0:
        return "0%"
    if rate < 0.1:
        return f"{rate:.3f}%"
    if rate < 10:
        return f"{rate:.2f}%"
    return f"{rate:.1f}%"


def _short_rate(rate: float | None) -> str:
    """The figure printed inside a heat map cell (narrow)."""
    if rate is None:
        return "-"
    if rate >= 10:
        return f"{rate:.0f}"
    return f"{rate:.1f}"


def cell_text(cell: HeatCell, threshold: float, escalate: float | None = None) -> str:
    """The cell's figures in words: the tooltip and the screen reader's name of the cell."""
    level = rate_level(cell.rate, threshold, escalate)
    if cell.rate is None:
        return f"{cell.table} {cell.date}: {cell.quarantined:,} quarantined, no valid rows"
    return (
        f"{cell.table} {cell.date}: {cell.quarantined:,} quarantined of {cell.valid:,} valid, "
        f"rate {fmt_rate(cell.rate)}, {LEVEL_TEXT[level]} ({fmt_rate(threshold)})"
    )


CELL_W, CELL_H, LABEL_W, HEAD_H = 58, 26, 150, 34


def heatmap_svg(
    tables: Sequence[str],
    days: Sequence[str],
    cells: Sequence[HeatCell],
    *,
    threshold: float,
    escalate: float | None = None,
    title: str = "Quarantine rate per table and day",
) -> str:
    """Tables (rows) x days (columns, ISO dates), each cell filled by its rate's level and printing the
    rate; a missing (table, day) is an empty cell. ``data-level`` on each cell names its level."""
    by_key = {(c.table, c.date): c for c in cells}
    width = LABEL_W + CELL_W * len(days) + 2
    height = HEAD_H + CELL_H * len(tables) + 2
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart heatmap" role="group" '
        f'aria-label="{escape(title)}" viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        f"<title>{escape(title)}</title>",
    ]
    for col, day in enumerate(days):
        x = LABEL_W + col * CELL_W + CELL_W / 2
        out.append(
            f'<text class="hm-day" x="{x:g}" y="14" text-anchor="middle" aria-hidden="true">{escape(day[5:])}</text>'
        )
    for row, table in enumerate(tables):
        y = HEAD_H + row * CELL_H
        out.append(
            f'<text class="hm-table" x="{LABEL_W - 8}" y="{y + CELL_H / 2 + 4:g}" text-anchor="end" '
            f'aria-hidden="true">{escape(table)}</text>'
        )
        for col, day in enumerate(days):
            cell = by_key.get((table, day)) or HeatCell(table, day, 0, 0, None)
            level = rate_level(cell.rate, threshold, escalate)
            label = escape(cell_text(cell, threshold, escalate))
            x = LABEL_W + col * CELL_W
            out.append(
                f'<g class="hm-cell" role="img" aria-label="{label}" data-table="{escape(table)}" '
                f'data-date="{escape(day)}" data-level="{level}"><title>{label}</title>'
                f'<rect x="{x + 1}" y="{y + 1}" width="{CELL_W - 2}" height="{CELL_H - 2}" rx="3" '
                f'fill="{FILL[level]}" class="lvl-{level}"/>'
                f'<text x="{x + CELL_W / 2:g}" y="{y + CELL_H / 2 + 4:g}" text-anchor="middle" '
                f'aria-hidden="true">{_short_rate(cell.rate)}</text></g>'
            )
    out.append("</svg>")
    return "".join(out)


def legend_svg(*, threshold: float, escalate: float | None = None) -> str:
    """The heat map's legend: one swatch per level with its range in words."""
    ranges = {
        "empty": "no valid rows",
        "ok": f"≤ {fmt_rate(threshold / 2)}",
        "near": f"≤ {fmt_rate(threshold)} (threshold)",
        "over": f"> {fmt_rate(threshold)}" + (f", ≤ {fmt_rate(escalate)}" if escalate is not None else ""),
        "escalate": f"> {fmt_rate(escalate)} (escalation)" if escalate is not None else "",
    }
    levels = [lv for lv in LEVELS if ranges[lv]]
    item_w = 170
    width = item_w * len(levels)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart legend" role="img" '
        f'aria-label="Legend: {escape("; ".join(f"{LEVEL_TEXT[lv]} {ranges[lv]}" for lv in levels))}" '
        f'viewBox="0 0 {width} 20" width="{width}" height="20">'
    ]
    for i, level in enumerate(levels):
        x = i * item_w
        out.append(
            f'<rect x="{x}" y="3" width="14" height="14" rx="2" fill="{FILL[level]}" stroke="#afb8c1" '
            f'class="lvl-{level}"/><text x="{x + 20}" y="15" aria-hidden="true">{escape(ranges[level])}</text>'
        )
    out.append("</svg>")
    return "".join(out)


TREND_W, TREND_H, PAD_L, PAD_R, PAD_T, PAD_B = 320, 110, 42, 10, 10, 22


def _y_max(points: Sequence[TrendPoint], threshold: float) -> float:
    """The y axis' top: the highest rate or 1.5x the threshold, whichever is higher, to a round step."""
    top = max([p.rate for p in points if p.rate is not None] + [threshold * 1.5])
    for step in (1, 2, 5, 10, 20, 25, 50, 100):
        if top <= step:
            return float(step)
    return float(top)


def trend_svg(table: str, points: Sequence[TrendPoint], *, threshold: float) -> str:
    """A table's weekly rates as a line (oldest left), the threshold as a dashed line; each week a dot with
    its figures in a tooltip; weeks without valid rows break the line."""
    y_max = _y_max(points, threshold)
    plot_w = TREND_W - PAD_L - PAD_R
    plot_h = TREND_H - PAD_T - PAD_B
    n = max(len(points), 1)

    def x_at(i: int) -> float:
        return PAD_L + (plot_w * (i + 0.5) / n)

    def y_at(rate: float) -> float:
        return PAD_T + plot_h * (1 - min(rate, y_max) / y_max)

    last = next((p for p in reversed(points) if p.rate is not None), None)
    summary = f"{table}: weekly quarantine rate over {len(points)} weeks, threshold {fmt_rate(threshold)}" + (
        f", last week {fmt_rate(last.rate)}" if last is not None else ", no valid rows"
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart trend" role="group" aria-label="{escape(summary)}" '
        f'viewBox="0 0 {TREND_W} {TREND_H}" width="{TREND_W}" height="{TREND_H}" data-table="{escape(table)}">',
        f"<title>{escape(summary)}</title>",
        f'<line class="axis" x1="{PAD_L}" y1="{PAD_T + plot_h}" x2="{TREND_W - PAD_R}" y2="{PAD_T + plot_h}" '
        'stroke="#afb8c1"/>',
        f'<text class="tick" x="{PAD_L - 4}" y="{PAD_T + 4}" text-anchor="end" aria-hidden="true">{y_max:g}%</text>',
        f'<text class="tick" x="{PAD_L - 4}" y="{PAD_T + plot_h}" text-anchor="end" aria-hidden="true">0%</text>',
    ]
    ty = y_at(threshold)
    out.append(
        f'<line class="threshold" x1="{PAD_L}" y1="{ty:.1f}" x2="{TREND_W - PAD_R}" y2="{ty:.1f}" '
        f'stroke="#cf222e" stroke-dasharray="4 3"><title>threshold {escape(fmt_rate(threshold))}</title></line>'
    )
    segments: list[list[tuple[float, float]]] = [[]]
    for i, p in enumerate(points):
        if p.rate is None:
            segments.append([])
        else:
            segments[-1].append((x_at(i), y_at(p.rate)))
    for seg in segments:
        if len(seg) > 1:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in seg)
            out.append(f'<polyline class="line" points="{coords}" fill="none" stroke="#0969da" stroke-width="2"/>')
    for i, p in enumerate(points):
        label = escape(
            f"week ending {p.week_end}: rate {fmt_rate(p.rate)}"
            + (f" ({p.quarantined:,} quarantined of {p.valid:,} valid)" if p.valid or p.quarantined else "")
            + (", over the threshold" if p.rate is not None and p.rate > threshold else "")
        )
        if p.rate is not None:
            over = p.rate > threshold
            out.append(
                f'<g class="pt" role="img" aria-label="{label}" data-over="{str(over).lower()}"><title>{label}</title>'
                f'<circle cx="{x_at(i):.1f}" cy="{y_at(p.rate):.1f}" r="3.5" '
                f'fill="{"#cf222e" if over else "#0969da"}"/></g>'
            )
    if points:
        for i in (0, len(points) - 1):
            out.append(
                f'<text class="tick" x="{x_at(i):.1f}" y="{TREND_H - 6}" text-anchor="middle" aria-hidden="true">'
                f"{escape(points[i].week_end[5:])}</text>"
            )
    out.append("</svg>")
    return "".join(out)
