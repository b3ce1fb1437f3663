"""Which app may import which (docs/architecture.md, "Layering"), read from the source: an arrow that runs
the wrong way fails here, wherever the import sits (module top, function body, ``TYPE_CHECKING``)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("access", "audit", "catalog", "incidents", "actions", "runbooks", "api", "web")


@dataclass(frozen=True)
class Import:
    where: str  # path:line
    module: str  # the module imported from (``controlplane.actions.policy``)
    names: tuple[str, ...]  # what ``from module import ...`` takes; empty for ``import module``


def _sources(package: str) -> list[Path]:
    """The package's modules (a directory) or the module itself, without migrations (frozen history)."""
    path = ROOT / package.replace(".", "/")
    if path.is_dir():
        return sorted(p for p in path.rglob("*.py") if "migrations" not in p.parts)
    return [path.with_suffix(".py")]


def _imports(package: str) -> list[Import]:
    found = []
    for path in _sources(package):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                found += [Import(where, alias.name, ()) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = module.split(".")[: len(module.split(".")) - node.level] if node.level else []
                target = ".".join([*base, node.module] if node.module else base)
                names = tuple(alias.name for alias in node.names)
                # ``from controlplane import actions`` imports the app as surely as ``import controlplane.actions``
                found += [Import(where, f"{target}.{n}", ()) for n in names if target == "controlplane"]
                if target != "controlplane":
                    found.append(Import(where, target, names))
    return found


def _app(module: str) -> str | None:
    """The app a module belongs to, by the names in APPS; None for everything else."""
    parts = module.split(".")
    if parts[0] == "runbooks":
        return "runbooks"
    if parts[0] == "controlplane" and len(parts) > 1 and parts[1] in APPS:
        return parts[1]
    return None


def _arrows(package: str) -> list[tuple[str, Import]]:
    own = _app(package)
    return [(app, imp) for imp in _imports(package) if (app := _app(imp.module)) is not None and app != own]


def test_the_sources_are_found() -> None:
    """The walk reads real files: a rule over nothing would pass for any code."""
    assert any(imp.module == "controlplane.audit.services" for imp in _imports("controlplane.catalog"))
    assert any(app == "catalog" for app, _ in _arrows("controlplane.actions"))


@pytest.mark.parametrize(
    ("package", "may_import"),
    [
        ("controlplane.access", {"audit"}),
        ("controlplane.audit", set()),
        ("controlplane.catalog", {"access", "audit"}),
    ],
)
def test_the_lower_layers_import_only_what_is_below_them(package: str, may_import: set[str]) -> None:
    """The catalog sits below the action path: it never imports actions (nor incidents, runbooks or an
    interface), so roles and target references live where both can import them."""
    wrong = [f"{imp.where}: {imp.module}" for app, imp in _arrows(package) if app not in may_import]
    assert wrong == [], f"{package} may import only {sorted(may_import)} of the apps"


def test_the_action_path_does_not_know_who_follows_it() -> None:
    """actions/ imports no interface and no follower (runbooks, the API, the web): they subscribe to
    ``controlplane/actions/signals.py``. Of incidents it takes only the Incident model, which an action
    row points at; the timeline notes are written by incidents' receivers."""
    wrong = []
    for app, imp in _arrows("controlplane.actions"):
        allowed = app in {"access", "audit", "catalog"} or (
            imp.module == "controlplane.incidents.models" and imp.names == ("Incident",)
        )
        if not allowed:
            wrong.append(f"{imp.where}: {imp.module} {list(imp.names)}")
    assert wrong == []


def _target_lookups_by_key(path: Path) -> list[str]:
    """``Target.objects ... .filter(key=...)`` / ``.get(key=...)`` calls in a file: a lookup of a target by
    key (an ``.exists()`` test is not one: nothing is read)."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"filter", "get"}
            and any(kw.arg in {"key", "key__exact"} for kw in node.keywords)
        ):
            continue
        chain: ast.AST = node.func.value
        while isinstance(chain, ast.Call | ast.Attribute):
            if (
                isinstance(chain, ast.Attribute)
                and chain.attr == "objects"
                and isinstance(chain.value, ast.Name)
                and chain.value.id == "Target"
            ):
                parent = parents.get(node)
                if not (isinstance(parent, ast.Attribute) and parent.attr == "exists"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                break
            chain = chain.func if isinstance(chain, ast.Call) else chain.value
    return found


def test_a_target_is_looked_up_by_key_in_one_place() -> None:
    """``controlplane.catalog.selectors.target_get`` is the one lookup (related rows loaded, NotFound naming
    the key); every interface and service calls it."""
    sources = [p for package in ("controlplane", "runbooks") for p in _sources(package)]
    lookups = [hit for path in sources for hit in _target_lookups_by_key(path)]
    assert [hit.rsplit(":", 1)[0] for hit in lookups] == ["controlplane/catalog/selectors.py"], lookups
