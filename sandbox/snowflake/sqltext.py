"""Small helpers for reading Snowflake SQL text: names, quoted literals, top-level splits.

The layer recognises its statements with regular expressions over the text (the contract's surface is small);
these helpers make the matching aware of quotes and parentheses where a plain regex is not.
"""

from __future__ import annotations

import datetime as dt
import re

IDENT = r'(?:"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)'
NAME = rf"(?:IDENTIFIER\(\s*'[^']*'\s*\)|{IDENT}(?:\s*\.\s*{IDENT}){{0,2}})"
STRING = r"'(?:[^'\\]|\\.|'')*'"


def split_name(text: str) -> list[str]:
    """``db.s."Name"`` or ``IDENTIFIER('db.s.n')`` -> its parts, unquoted parts upper-cased as Snowflake does."""
    text = text.strip()
    match = re.fullmatch(r"IDENTIFIER\(\s*'([^']*)'\s*\)", text, re.I)
    if match:
        text = match.group(1)
    parts = re.findall(r'"([^"]+)"|([^."\s]+)', text)
    return [quoted if quoted else plain.upper() for quoted, plain in parts]


def unquote(literal: str) -> str:
    """The value of a SQL string literal (``'it''s'`` -> ``it's``); other text is returned stripped."""
    literal = literal.strip()
    if len(literal) >= 2 and literal[0] == literal[-1] == "'":
        return literal[1:-1].replace("''", "'").replace("\\'", "'").replace("\\\\", "\\")
    return literal


def lit(value: object) -> str:
    """A SQL literal for ``value`` (None, bool, number, datetime or text)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dt.datetime):
        return f"'{value.isoformat()}'::TIMESTAMP_LTZ"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def _scan(text: str) -> list[tuple[int, str, int]]:
    """(index, char, depth) for every character outside quotes, comments and ``$$`` blocks."""
    out: list[tuple[int, str, int]] = []
    depth, i, n = 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"":
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if text[j] == "\\" and ch == "'" else 1
            i = j + 1
            continue
        if text.startswith("$$", i):
            end = text.find("$$", i + 2)
            i = n if end < 0 else end + 2
            continue
        if text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if ch == "(":
            depth += 1
        out.append((i, ch, depth))
        if ch == ")":
            depth -= 1
        i += 1
    return out


def split_top(text: str, sep: str) -> list[str]:
    """``text`` split on ``sep`` (one character) outside quotes and parentheses; empty pieces dropped."""
    pieces, start = [], 0
    for i, ch, depth in _scan(text):
        if ch == sep and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
    pieces.append(text[start:])
    return [p.strip() for p in pieces if p.strip()]


def closing_paren(text: str, open_at: int) -> int:
    """The index of the ``)`` closing the ``(`` at ``open_at``."""
    base = None
    for i, ch, depth in _scan(text):
        if i == open_at:
            base = depth
        elif base is not None and ch == ")" and depth == base:
            return i
    raise ValueError(f"unbalanced parentheses in: {text[:200]}")


def find_keyword(text: str, keyword: str) -> int:
    """The index of the first top-level, whole-word ``keyword`` (case-insensitive) outside quotes, or -1."""
    upper, k = text.upper(), keyword.upper()
    for i, _ch, depth in _scan(text):
        if depth == 0 and upper.startswith(k, i):
            before = upper[i - 1] if i else " "
            after = upper[i + len(k)] if i + len(k) < len(upper) else " "
            if not (before.isalnum() or before in "_$") and not (after.isalnum() or after in "_$"):
                return i
    return -1


def strip_statement(sql: str) -> str:
    """The statement without leading comments, surrounding blanks and trailing semicolons."""
    sql = sql.strip()
    while sql.startswith("--") or sql.startswith("/*"):
        sql = sql.split("\n", 1)[1].strip() if sql.startswith("--") and "\n" in sql else sql
        if sql.startswith("/*") and "*/" in sql:
            sql = sql.split("*/", 1)[1].strip()
        elif sql.startswith("--"):
            return ""
    return sql.rstrip(";").rstrip()


def options(text: str) -> dict[str, str]:
    """``KEY = value`` pairs (value a literal, a word or a parenthesised list) -> {KEY: raw value}."""
    found: dict[str, str] = {}
    pattern = re.compile(rf"([A-Za-z_]+)\s*=\s*({STRING}|\([^)]*\)|[^\s,()]+)", re.S)
    for match in pattern.finditer(text):
        found[match.group(1).upper()] = match.group(2)
    return found


def string_list(text: str) -> list[str]:
    """``('a', 'b')`` -> ``['a', 'b']``."""
    return [unquote(m) for m in re.findall(STRING, text)]
