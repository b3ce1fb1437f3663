"""Reading runbook files: YAML -> validated ``Runbook``, with every problem named by path, line and reason.

Validation goes beyond the pydantic shape: templates must compile, ``steps.<id>`` may only name an
earlier step, ``params.<name>`` only a declared parameter, and an executable check or action must name a
check or verb some registered connector offers, with parameters that check or verb takes; steps on a system
without a connector say so with ``waits_for`` (and may not claim to wait for a connector that exists).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from connectors.registry import connector_classes
from runbooks import templating
from runbooks.schema import PARAM_REFERENCE, STEP_REFERENCE, ActionStep, CheckStep, Runbook

LIBRARY = Path(__file__).resolve().parent / "library"


@dataclass(frozen=True)
class Problem:
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class Parsed:
    """One file read: the runbook (when valid), its text's digest, and its problems."""

    path: str
    digest: str
    runbook: Runbook | None = None
    problems: list[Problem] = field(default_factory=list)


def library_files(paths: Sequence[str | Path] = ()) -> list[Path]:
    """The given files and the ``*.yaml`` files of the given folders; the library when nothing is given."""
    found: list[Path] = []
    for p in [Path(x) for x in paths] or [LIBRARY]:
        found.extend(sorted(p.glob("*.yaml")) if p.is_dir() else [p])
    return found


def parse_file(path: Path) -> Parsed:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Parsed(str(path), "", problems=[Problem(str(path), 0, f"cannot read: {exc}")])
    return parse_text(text, str(path))


def parse_text(text: str, path: str) -> Parsed:
    parsed = Parsed(path, hashlib.sha256(text.encode()).hexdigest())
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        parsed.problems.append(Problem(path, line, f"not valid YAML: {exc.problem or exc}"))
        return parsed
    except yaml.YAMLError as exc:
        parsed.problems.append(Problem(path, 0, f"not valid YAML: {exc}"))
        return parsed
    if not isinstance(data, dict):
        parsed.problems.append(Problem(path, 1, "a runbook is a YAML mapping (id, title, version, steps ...)"))
        return parsed
    try:
        runbook = Runbook.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = [part for part in err["loc"] if not _is_union_tag(part)]
            where = ".".join(map(str, loc)) or "(top)"
            message = err["msg"].removeprefix("Value error, ")
            parsed.problems.append(Problem(path, _line_of(root, loc), f"{where}: {message}"))
        return parsed
    expected = f"{runbook.id}.yaml"
    if Path(path).name != expected and Path(path).suffix == ".yaml":
        parsed.problems.append(Problem(path, _line_of(root, ["id"]), f"the file must be named {expected}"))
    parsed.problems.extend(Problem(path, _line_of(root, loc), reason) for loc, reason in semantic_problems(runbook))
    if not parsed.problems:
        parsed.runbook = runbook
    return parsed


def _is_union_tag(part: Any) -> bool:
    # pydantic names the discriminated union's member in the location ("steps.2.action.verb"): drop it
    return isinstance(part, str) and part in {"manual", "check", "action", "approval", "notify"}


def _line_of(node: Any, loc: Iterable[Any]) -> int:
    """The 1-based line of the YAML node at ``loc`` (the deepest one that exists)."""
    line = node.start_mark.line + 1 if node is not None else 0
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            if child is None:  # point at the mapping's key if only the key exists
                child = next((k for k, _ in node.value if getattr(k, "value", None) == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


def _offered() -> tuple[dict[str, set[str]], dict[str, set[str]], set[str]]:
    """Verbs and checks of the registered connectors, each with the names of its parameters; the kinds."""
    verbs: dict[str, set[str]] = {}
    checks: dict[str, set[str]] = {}
    kinds: set[str] = set()
    for cls in connector_classes().values():
        kinds.add(cls.kind)
        for verb in cls.verbs:
            verbs.setdefault(verb.name, set()).update(verb.params_model.model_fields)
        for check in cls.checks:
            checks.setdefault(check.name, set()).update(check.params_model.model_fields)
    return verbs, checks, kinds


def _templates(value: Any, loc: list[Any]) -> Iterable[tuple[list[Any], str]]:
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _templates(item, [*loc, i])
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _templates(item, [*loc, key])


def semantic_problems(runbook: Runbook) -> list[tuple[list[Any], str]]:
    """What the shape cannot say: templates compile, references point back, verbs and checks exist."""
    problems: list[tuple[list[Any], str]] = []
    verbs, checks, kinds = _offered()
    declared = {p.name for p in runbook.parameters}
    for i, param in enumerate(runbook.parameters):
        if isinstance(param.default, str):
            _check_template(problems, ["parameters", i, "default"], param.default, declared, set(), steps_ok=False)
    earlier: set[str] = set()
    for i, step in enumerate(runbook.steps):
        loc: list[Any] = ["steps", i]
        fields: dict[str, Any] = {
            "instructions": step.instructions,
            "outputs": step.outputs,
            "commands": [c.code for c in step.commands],
        }
        for name in ("target", "params", "reason", "message"):
            if hasattr(step, name):
                fields[name] = getattr(step, name)
        for name, value in fields.items():
            for where, text in _templates(value, [*loc, name]):
                _check_template(problems, where, text, declared, earlier, steps_ok=True)
        if step.when:
            _check_template(problems, [*loc, "when"], step.when, declared, earlier, steps_ok=True, expression=True)
        waits_for = getattr(step, "waits_for", None)
        if waits_for is not None and waits_for in kinds:
            problems.append(
                ([*loc, "waits_for"], f"the {waits_for} connector exists: make this step executable, drop waits_for")
            )
        elif waits_for is None and step.kind == "action" and step.verb not in verbs:
            problems.append(([*loc, "verb"], f"no connector offers the verb {step.verb!r} (there are {sorted(verbs)})"))
        elif waits_for is None and step.kind == "check" and step.check not in checks:
            problems.append(([*loc, "check"], f"no connector offers the check {step.check!r} (see {sorted(checks)})"))
        elif waits_for is None and isinstance(step, ActionStep | CheckStep):
            what, name = ("verb", step.verb) if isinstance(step, ActionStep) else ("check", step.check)
            takes = (verbs if isinstance(step, ActionStep) else checks)[name]
            for key in sorted(set(step.params) - takes):
                problems.append(
                    ([*loc, "params", key], f"the {what} {name!r} takes no parameter {key!r} ({sorted(takes)})")
                )
        earlier.add(step.id)
    return problems


def _check_template(
    problems: list[tuple[list[Any], str]],
    loc: list[Any],
    text: str,
    declared: set[str],
    earlier: set[str],
    *,
    steps_ok: bool,
    expression: bool = False,
) -> None:
    if not expression and "{" not in text:
        return
    try:
        templating.check_syntax(text, expression=expression)
    except templating.TemplateProblem as exc:
        problems.append((loc, str(exc)))
        return
    for match in STEP_REFERENCE.finditer(text):
        name = match.group(1) or match.group(2)
        if not steps_ok:
            problems.append((loc, f"a parameter default cannot use steps ({name!r})"))
        elif name not in earlier:
            problems.append((loc, f"steps.{name} is not an earlier step"))
    for match in PARAM_REFERENCE.finditer(text):
        if match.group(1) not in declared:
            problems.append((loc, f"params.{match.group(1)} is not a declared parameter"))
