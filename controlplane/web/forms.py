"""HTML form fields generated from a verb's or check's pydantic params JSON schema, and the way back.

The schema is the contract bots read too (``params_model.model_json_schema()``), so the web form offers
exactly what the API accepts: booleans become checkboxes, optional booleans a three-way select (the
connector's own default, yes, no), integers and numbers number inputs with their bounds, enums selects,
dates and timestamps date inputs (a day is midnight UTC), strings text inputs. Anything else (lists,
objects) is a JSON text area.

Parsing is deliberately lenient: a value that does not convert is passed through as typed, so the
verb's pydantic model (called by the service) reports the error in its own words, naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PREFIX = "param-"  # keeps params apart from "reason", "csrfmiddlewaretoken" and the like

_BOOL_CHOICES = [("true", "yes"), ("false", "no")]


@dataclass(frozen=True)
class FormField:
    """One input of a generated form. ``value`` is what the input shows (a string, or a bool for checkboxes)."""

    name: str
    input_name: str
    input_id: str
    label: str
    widget: str  # checkbox | number | select | date | text | json
    required: bool
    help: str = ""
    value: Any = ""
    minimum: float | int | None = None
    maximum: float | int | None = None
    step: str = ""
    choices: list[tuple[str, str]] = field(default_factory=list)
    default_label: str = ""
    range_text: str = ""
    # Live choices from the connector (``x-choices`` in the schema): suggestions for a text input, the
    # options of a multi-select for a list of strings.
    suggestions: list[tuple[str, str]] = field(default_factory=list)


def _resolve(schema: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow a local ``$ref`` (pydantic puts enums and nested models under ``$defs``)."""
    ref = node.get("$ref")
    if ref is None and len(node.get("allOf", [])) == 1:
        ref = node["allOf"][0].get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        merged = dict(schema.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {}))
        merged.update({k: v for k, v in node.items() if k not in ("$ref", "allOf")})
        return merged
    return node


def _unwrap_optional(schema: Mapping[str, Any], node: Mapping[str, Any]) -> tuple[Mapping[str, Any], bool]:
    """``anyOf: [X, {"type": "null"}]`` is an optional X: return X (with the outer title, default and
    description) and True."""
    node = _resolve(schema, node)
    options = node.get("anyOf")
    if not isinstance(options, list):
        return node, False
    non_null = [o for o in options if o.get("type") != "null"]
    if len(non_null) != 1 or len(non_null) == len(options):
        return node, False
    inner = dict(_resolve(schema, non_null[0]))
    for key in ("title", "description", "default"):
        if key in node:
            inner[key] = node[key]
    return inner, True


def _display(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _bounds(node: Mapping[str, Any], *, integer: bool) -> tuple[Any, Any, str]:
    """HTML ``min``/``max`` and a readable range. Exclusive bounds of integers become inclusive ones;
    those of numbers cannot be said in HTML, so only the text tells them (the model still enforces)."""
    minimum, maximum = node.get("minimum"), node.get("maximum")
    parts = []
    if minimum is not None:
        parts.append(f"min {minimum}")
    elif "exclusiveMinimum" in node:
        if integer:
            minimum = node["exclusiveMinimum"] + 1
            parts.append(f"min {minimum}")
        else:
            parts.append(f"more than {node['exclusiveMinimum']}")
    if maximum is not None:
        parts.append(f"max {maximum}")
    elif "exclusiveMaximum" in node:
        if integer:
            maximum = node["exclusiveMaximum"] - 1
            parts.append(f"max {maximum}")
        else:
            parts.append(f"less than {node['exclusiveMaximum']}")
    return minimum, maximum, ", ".join(parts)


def _label(name: str, node: Mapping[str, Any]) -> str:
    title = node.get("title")
    return str(title) if title else name.replace("_", " ").capitalize()


def choice_sources(schema: Mapping[str, Any]) -> dict[str, str]:
    """Field name -> the connector metadata it picks from (``x-choices``)."""
    out = {}
    for name, raw in schema.get("properties", {}).items():
        node, _ = _unwrap_optional(schema, raw)
        source = node.get("x-choices") or raw.get("x-choices")
        if isinstance(source, str):
            out[name] = source
    return out


def _is_string_list(node: Mapping[str, Any]) -> bool:
    return node.get("type") == "array" and node.get("items", {}).get("type") == "string"


def fields_from_schema(
    schema: Mapping[str, Any],
    *,
    form_id: str,
    submitted: Mapping[str, Any] | None = None,
    choices: Mapping[str, list[tuple[str, str]]] | None = None,
) -> list[FormField]:
    """The inputs for a params schema; ``submitted`` (a POST) refills them after an error; ``choices``
    (field -> live options from the connector) turn free text into picking."""
    live = choices or {}
    required = set(schema.get("required", []))
    out: list[FormField] = []
    for name, raw in schema.get("properties", {}).items():
        node, optional = _unwrap_optional(schema, raw)
        input_name = PREFIX + name
        common: dict[str, Any] = {
            "name": name,
            "input_name": input_name,
            "input_id": f"{form_id}-{name}",
            "label": _label(name, node),
            "required": name in required,
            "help": str(node.get("description", "")),
        }
        default = node.get("default")
        kind = node.get("type")
        if submitted is not None:
            shown: Any = submitted.get(input_name, "")
        else:
            shown = _display(default)

        if "enum" in node:
            enum_choices = [(_display(v), _display(v)) for v in node["enum"]]
            out.append(
                FormField(
                    **common,
                    widget="select",
                    choices=enum_choices,
                    value=shown,
                    default_label="" if name in required and not optional else "(default)",
                )
            )
        elif kind == "boolean" and optional:
            # Three states: null (the connector decides), true, false. Not a checkbox, which has two.
            out.append(
                FormField(
                    **common,
                    widget="select",
                    choices=_BOOL_CHOICES,
                    value=shown,
                    default_label="automatic (default)",
                )
            )
        elif kind == "boolean":
            checked = submitted.get(input_name) in ("on", "true") if submitted is not None else bool(default)
            out.append(FormField(**common, widget="checkbox", value=checked))
        elif kind in ("integer", "number"):
            minimum, maximum, text = _bounds(node, integer=kind == "integer")
            out.append(
                FormField(
                    **common,
                    widget="number",
                    value=shown,
                    minimum=minimum,
                    maximum=maximum,
                    step="1" if kind == "integer" else "any",
                    range_text=text,
                )
            )
        elif kind == "string" and node.get("format") in ("date", "date-time"):
            # A day picker for timestamps too: the params type reads a date as midnight UTC
            # (connectors.base.UtcDatetime); a bot sends any timestamp through the API.
            day = shown[:10] if isinstance(shown, str) else shown
            out.append(FormField(**common, widget="date", value=day))
        elif kind == "string":
            out.append(FormField(**common, widget="text", value=shown, suggestions=list(live.get(name, []))))
        elif _is_string_list(node) and live.get(name):
            picked = _getlist(submitted, input_name) if submitted is not None else []
            out.append(FormField(**common, widget="multiselect", value=picked, choices=list(live[name])))
        else:
            out.append(FormField(**common, widget="json", value=shown))
    return out


def _getlist(post: Mapping[str, Any], name: str) -> list[str]:
    getlist = getattr(post, "getlist", None)
    if getlist is not None:
        return [str(v) for v in getlist(name)]
    value = post.get(name)
    return [str(v) for v in value] if isinstance(value, list) else ([str(value)] if value else [])


def _number(text: str, kind: str) -> Any:
    try:
        return int(text) if kind == "integer" else float(text)
    except ValueError:
        return text  # pydantic names the field and says what is wrong


def params_from_post(schema: Mapping[str, Any], post: Mapping[str, Any]) -> dict[str, Any]:
    """The params dict a generated form submitted. Empty optional inputs are left out, so the verb's
    defaults apply (and the params fingerprint matches an API request that omitted them)."""
    params: dict[str, Any] = {}
    for name, raw in schema.get("properties", {}).items():
        node, optional = _unwrap_optional(schema, raw)
        kind = node.get("type")
        value = post.get(PREFIX + name)
        if _is_string_list(node) and "x-choices" in (node.keys() | raw.keys()):
            picked = [v for v in _getlist(post, PREFIX + name) if v.strip()]
            if picked:
                params[name] = picked
            continue
        if kind == "boolean" and not optional and "enum" not in node:
            checked = value in ("on", "true")
            if checked or "default" not in node or node["default"] is not False:
                params[name] = checked
            continue
        if value is None or (isinstance(value, str) and value.strip() == ""):
            continue
        text = str(value).strip()
        if "enum" in node:
            match = next((v for v in node["enum"] if _display(v) == text), text)
            params[name] = match
        elif kind == "boolean":
            params[name] = {"true": True, "false": False}.get(text, text)
        elif kind in ("integer", "number"):
            params[name] = _number(text, str(kind))
        elif kind == "string":
            params[name] = text
        else:
            try:
                params[name] = json.loads(text)
            except ValueError:
                params[name] = text
    return params
