"""Figures as people read them, the same on every interface (the web templates' filters, Slack messages)."""

from __future__ import annotations


def nice_bytes(size: float) -> str:
    """1536 -> ``1.5 kB`` (powers of 1024, up to TB)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def usd(amount: float) -> str:
    """12.5 -> ``$12.50``, 1250 -> ``$1,250.00``; under a cent but not zero -> ``< $0.01``."""
    if 0 < amount < 0.01:
        return "< $0.01"
    return f"${amount:,.2f}"


def plan_cost(estimated_bytes: float | None, estimated_cost_usd: float | None) -> str:
    """A plan's cost figures in a line: ``reads 3.0 TB, estimated $18.75``; either part alone; "" when the
    plan has neither (most verbs cost nothing to run)."""
    parts = []
    if estimated_bytes is not None:
        parts.append(f"reads {nice_bytes(estimated_bytes)}")
    if estimated_cost_usd is not None:
        parts.append(f"estimated {usd(estimated_cost_usd)}")
    return ", ".join(parts)
