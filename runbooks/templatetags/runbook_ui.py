"""Template filters for runbook pages."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

register = template.Library()

# CommonMark with raw HTML off: a runbook's markdown cannot inject markup or scripts into the page.
_MD = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


@register.filter
def markdown(text: Any) -> SafeString:
    return mark_safe(_MD.render(str(text or "")))  # noqa: S308 (html disabled above: the output is escaped)


@register.filter
def step_kind_label(step: Any) -> str:
    waits_for = getattr(step, "waits_for", None)
    if waits_for:
        return f"{step.kind} (by hand until the {waits_for} connector)"
    return str(step.kind)


@register.filter
def get_item(mapping: Any, key: Any) -> Any:
    return mapping.get(key) if hasattr(mapping, "get") else None
