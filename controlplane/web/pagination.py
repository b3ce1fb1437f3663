"""Keyset (cursor) pagination for the history lists (actions, audit, incidents).

Page numbers with ``OFFSET`` and a ``COUNT(*)`` cost time in proportion to the rows before the page and
in the table (at 1 M actions: 0.1 s for the count, 0.6 s for a page half-way down). A keyset page asks
for the rows after the last one shown, in the order of an index (``WHERE (requested_at, id) < (x, y)
ORDER BY requested_at DESC, id DESC LIMIT 51``), so its cost does not depend on how deep it is or how
big the table is. The total is counted only up to ``COUNT_CAP`` (one bounded query): small lists keep
"page 3 of 7 · 312 in all", large ones say "more than 1,000".

The cursor in the URL is opaque to people (base64url of a small JSON: the ordering values of the row the
page starts after or before, the direction, and the page number to show); it is only a position, so a
hand-edited one can show no more than the filters allow. One that cannot be read falls back to the first
page with a message.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db.models import Field, Model, Q, QuerySet

PAGE_SIZE = 50
COUNT_CAP = 1000
MAX_CURSOR_LENGTH = 512
INVALID_CURSOR = "That page link is not valid (it may be from an older version of this page); showing the newest."


class InvalidCursor(ValueError):
    """The ``cursor`` parameter cannot be read as a position in this list."""


@dataclass(frozen=True)
class Cursor:
    """A position: the ordering values of a row, and whether the page holds the rows older (after it in
    the newest-first order) or newer than it; ``number`` is the page number the page shows."""

    values: tuple[Any, ...]
    older: bool
    number: int


@dataclass(frozen=True)
class KeysetPage:
    """One page of a newest-first list, for ``templates/web/partials/pagination.html``.

    ``previous_cursor`` is None when the newer page is the first one (its link drops the cursor);
    ``count`` is exact up to ``count_cap`` and ``count_capped`` says there are more; ``num_pages`` is
    known only then. ``invalid_cursor`` says the requested cursor could not be read (this is page 1)."""

    object_list: list[Any]
    number: int
    has_next: bool
    has_previous: bool
    next_cursor: str | None
    previous_cursor: str | None
    count: int
    count_capped: bool
    count_cap: int
    invalid_cursor: bool = False

    @property
    def num_pages(self) -> int | None:
        if self.count_capped:
            return None
        return max(1, math.ceil(self.count / PAGE_SIZE))


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def encode_cursor(values: Sequence[Any], *, older: bool, number: int) -> str:
    """The cursor of the page after (``older``) or before a row with these ordering values."""
    payload = {"v": [_plain(v) for v in values], "o": 1 if older else 0, "n": int(number)}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(raw: str, model: type[Model], fields: Sequence[str]) -> Cursor:
    """Read a cursor of a list of ``model`` ordered by ``fields``; InvalidCursor when it is not one."""
    if len(raw) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("cursor too long")
    try:
        payload = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidCursor(f"not a cursor: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidCursor("not a cursor")
    values, older, number = payload.get("v"), payload.get("o"), payload.get("n")
    if not isinstance(values, list) or len(values) != len(fields) or older not in (0, 1):
        raise InvalidCursor("not a cursor of this list")
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise InvalidCursor("bad page number")
    typed = []
    for name, value in zip(fields, values, strict=True):
        if value is None or isinstance(value, bool | dict | list):
            raise InvalidCursor(f"bad value for {name}")
        try:
            model_field = model._meta.get_field(name)
            if not isinstance(model_field, Field):
                raise InvalidCursor(f"{name} is not a column")
            typed.append(model_field.to_python(value))
        except (FieldDoesNotExist, ValidationError, TypeError, ValueError, OverflowError):
            raise InvalidCursor(f"bad value for {name}") from None
    return Cursor(tuple(typed), bool(older), number)


def _beyond(fields: Sequence[str], values: Sequence[Any], *, older: bool) -> tuple[Q, Q | None]:
    """(filter, exclude) selecting the rows strictly older (or newer) than ``values`` in the descending
    order of ``fields``. Written as ``a <= x AND NOT (a = x AND b >= y)`` rather than ``a < x OR (a = x
    AND b < y)``: the first column's range is then an index condition, the rest a filter on its ties."""
    if len(fields) == 1:
        return Q(**{f"{fields[0]}__{'lt' if older else 'gt'}": values[0]}), None
    if len(fields) != 2:
        raise ValueError("keyset pages order by one or two fields")
    (first, second), (x, y) = fields, values
    if older:
        return Q(**{f"{first}__lte": x}), Q(**{first: x, f"{second}__gte": y})
    return Q(**{f"{first}__gte": x}), Q(**{first: x, f"{second}__lte": y})


def _slice(qs: QuerySet[Any], fields: Sequence[str], cursor: Cursor | None, size: int) -> list[Any]:
    """Up to ``size + 1`` rows beyond the cursor (or the newest), in the page's reading direction."""
    if cursor is None:
        return list(qs.order_by(*[f"-{f}" for f in fields])[: size + 1])
    keep, drop = _beyond(fields, cursor.values, older=cursor.older)
    qs = qs.filter(keep) if drop is None else qs.filter(keep).exclude(drop)
    ordering = [f"-{f}" if cursor.older else f for f in fields]
    return list(qs.order_by(*ordering)[: size + 1])


def keyset_page(
    qs: QuerySet[Any], fields: Sequence[str], raw_cursor: str | None, *, size: int = PAGE_SIZE
) -> KeysetPage:
    """The page of ``qs`` (newest first by ``fields``, the last of them unique) that ``raw_cursor`` points
    at, or the first page. Two queries whatever the page and the table's size: the rows, and the count up
    to ``COUNT_CAP``; three when a "newer" cursor reaches the top and the first page is read instead."""
    invalid = False
    cursor: Cursor | None = None
    if raw_cursor:
        try:
            cursor = decode_cursor(raw_cursor, qs.model, fields)
        except InvalidCursor:
            invalid = True
    rows = _slice(qs, fields, cursor, size)
    if cursor is not None and not cursor.older and len(rows) <= size:
        cursor, rows = None, _slice(qs, fields, None, size)  # nothing newer beyond it: show the first page
    more = len(rows) > size
    rows = rows[:size]
    if cursor is None:
        number, has_previous, has_next = 1, False, more
    elif cursor.older:
        number, has_previous, has_next = cursor.number, True, more
    else:
        rows.reverse()
        number, has_previous, has_next = max(cursor.number, 2), True, True
    # SELECT COUNT(*) FROM (SELECT ... LIMIT 1001): reads at most COUNT_CAP + 1 index entries.
    count = qs.order_by()[: COUNT_CAP + 1].count()

    def key(row: Any) -> list[Any]:
        return [getattr(row, f) for f in fields]

    newer_is_first = number <= 2 or not rows
    return KeysetPage(
        object_list=rows,
        number=number,
        has_next=has_next and bool(rows),
        has_previous=has_previous,
        next_cursor=encode_cursor(key(rows[-1]), older=True, number=number + 1) if has_next and rows else None,
        previous_cursor=None if newer_is_first else encode_cursor(key(rows[0]), older=False, number=number - 1),
        count=min(count, COUNT_CAP),
        count_capped=count > COUNT_CAP,
        count_cap=COUNT_CAP,
        invalid_cursor=invalid,
    )
