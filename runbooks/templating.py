"""Templates in runbooks: a sandboxed Jinja environment over the incident, the run's parameters and the
results of earlier steps.

The sandbox refuses attribute access to internals (``__class__`` ...) and the environment is immutable,
so a runbook file cannot reach Python objects or change the context; undefined names are errors, not
empty strings, so a typo in a template fails the step loudly instead of acting on "". A string that is
exactly one ``{{ expression }}`` keeps the expression's type (a list of task ids stays a list).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, trim_blocks=True)
_WHOLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.S)


class TemplateProblem(ValueError):
    """A template that does not compile or cannot be rendered; the message says which and why."""


def check_syntax(text: str, *, expression: bool = False) -> None:
    """Raise TemplateProblem if ``text`` does not compile (the loader calls this for every template)."""
    try:
        if expression:
            _ENV.compile_expression(text)
        else:
            _ENV.parse(text)
    except TemplateError as exc:
        raise TemplateProblem(f"template {text!r} does not compile: {exc}") from None


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render templates inside ``value`` (strings, and strings inside lists and dicts)."""
    if isinstance(value, str):
        return _render_string(value, context)
    if isinstance(value, list):
        return [render(item, context) for item in value]
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    return value


def _render_string(text: str, context: Mapping[str, Any]) -> Any:
    if "{" not in text:
        return text
    try:
        whole = _WHOLE.match(text)
        if whole:
            result = _ENV.compile_expression(whole.group("expr"), undefined_to_none=False)(**context)
            if isinstance(result, Undefined):
                result._fail_with_undefined_error()  # raises UndefinedError, naming what is missing
            return result
        return _ENV.from_string(text).render(**context)
    except TemplateError as exc:
        raise TemplateProblem(f"cannot render {text!r}: {exc}") from None
    except (TypeError, ValueError, LookupError, ArithmeticError) as exc:
        raise TemplateProblem(f"cannot render {text!r}: {type(exc).__name__}: {exc}") from None


def evaluate(expression: str, context: Mapping[str, Any]) -> bool:
    """A ``when:`` condition: true or false (a missing value is an error, not false)."""
    try:
        return bool(_ENV.compile_expression(expression, undefined_to_none=False)(**context))
    except TemplateError as exc:
        raise TemplateProblem(f"cannot evaluate when: {expression!r}: {exc}") from None
    except (TypeError, ValueError, LookupError, ArithmeticError) as exc:
        raise TemplateProblem(f"cannot evaluate when: {expression!r}: {type(exc).__name__}: {exc}") from None
