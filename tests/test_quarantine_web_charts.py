"""The review page's SVG charts (controlplane/quarantine/charts.py): pure functions, checked on the markup
they produce (well-formed SVG, the level of each cell against the threshold, figures as text, escaping)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from controlplane.quarantine.charts import (
    HeatCell,
    TrendPoint,
    fmt_rate,
    heatmap_svg,
    legend_svg,
    rate_level,
    trend_svg,
)

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # our own markup: parsing proves it is well-formed


def test_rate_level_against_threshold_and_escalation() -> None:
    assert rate_level(None, 5) == "empty"
    assert rate_level(0.0, 5) == "ok"
    assert rate_level(2.5, 5) == "ok"
    assert rate_level(2.6, 5) == "near"
    assert rate_level(5.0, 5) == "near"  # at the threshold is not over it ("> 5%" in the seed)
    assert rate_level(5.01, 5) == "over"
    assert rate_level(10.0, 5, 10) == "over"
    assert rate_level(10.5, 5, 10) == "escalate"
    assert rate_level(10.5, 5) == "over"


def test_fmt_rate() -> None:
    assert fmt_rate(None) == "—"
    assert fmt_rate(0) == "0%"
    assert fmt_rate(0.0421) == "0.042%"
    assert fmt_rate(6.1666) == "6.17%"
    assert fmt_rate(12.34) == "12.3%"


def test_heatmap_cells_coloured_by_rate_with_figures_as_text() -> None:
    days = ["2026-11-30", "2026-12-01"]
    cells = [
        HeatCell("orders", "2026-11-30", 1000, 62, 6.2),
        HeatCell("orders", "2026-12-01", 1000, 10, 1.0),
        HeatCell("customers", "2026-11-30", 0, 3, None),
    ]
    root = parse(heatmap_svg(["orders", "customers"], days, cells, threshold=5, escalate=10))
    groups = {(g.get("data-table"), g.get("data-date")): g for g in root.iter(f"{SVG}g")}
    assert len(groups) == 4  # the missing (customers, 12-01) is drawn as an empty cell
    over = groups[("orders", "2026-11-30")]
    assert over.get("data-level") == "over"
    assert over.find(f"{SVG}rect").get("fill") == "#ffb77c"  # type: ignore[union-attr]
    assert over.get("aria-label") == over.findtext(f"{SVG}title")
    assert "62 quarantined of 1,000 valid, rate 6.20%, over the threshold (5.00%)" in over.get("aria-label", "")
    assert over.findtext(f"{SVG}text") == "6.2"  # the figure is printed, not only coloured
    assert groups[("orders", "2026-12-01")].get("data-level") == "ok"
    assert groups[("customers", "2026-11-30")].get("data-level") == "empty"
    assert "no valid rows" in groups[("customers", "2026-12-01")].get("aria-label", "")


def test_heatmap_escapes_names() -> None:
    svg = heatmap_svg(['<x"&'], ["2026-11-30"], [], threshold=5, title="a <b>")
    assert "<x" not in svg.replace("<title>", "").replace("<text", "")
    parse(svg)


def test_legend_names_each_level_with_its_range() -> None:
    root = parse(legend_svg(threshold=5, escalate=10))
    label = root.get("aria-label", "")
    assert "over the threshold > 5.00%, ≤ 10.0%" in label
    assert "over the escalation rate > 10.0% (escalation)" in label
    assert len(list(root.iter(f"{SVG}rect"))) == 5
    assert len(list(parse(legend_svg(threshold=10)).iter(f"{SVG}rect"))) == 4  # no escalation rate: no swatch


def test_trend_draws_threshold_line_and_marks_weeks_over_it() -> None:
    rates = [1, 2, None, 4, 7, 12]
    points = [TrendPoint(f"2026-{m:02d}-01", r, 10, 100) for m, r in zip(range(1, 7), rates, strict=True)]
    root = parse(trend_svg("orders", points, threshold=5))
    threshold = next(el for el in root.iter(f"{SVG}line") if el.get("class") == "threshold")
    # y axis to 20% (the highest rate, 12, rounded up): the 5% line sits at three quarters of the plot
    assert float(threshold.get("y1", "0")) == 10 + 78 * 0.75
    dots = [g for g in root.iter(f"{SVG}g") if g.get("class") == "pt"]
    assert len(dots) == 5  # the week without valid rows has no dot ...
    assert len(list(root.iter(f"{SVG}polyline"))) == 2  # ... and breaks the line
    assert [g.get("data-over") for g in dots] == ["false", "false", "false", "true", "true"]
    assert "week ending 2026-06-01: rate 12.0% (10 quarantined of 100 valid), over the threshold" in (
        dots[-1].get("aria-label", "")
    )
    assert "last week 12.0%" in root.get("aria-label", "")


def test_trend_without_points_is_still_an_svg() -> None:
    root = parse(trend_svg("t", [], threshold=5))
    assert "no valid rows" in root.get("aria-label", "")
