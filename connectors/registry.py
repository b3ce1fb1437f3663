"""The one registry of connectors: the ``controlplane.connectors`` entry-point group.

Built-in connectors register there too (pyproject.toml), so adding a connector means shipping a package
with one entry point, never editing settings, urls or a list elsewhere.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points

from connectors.base import Connector, ConnectorError

GROUP = "controlplane.connectors"


@functools.cache
def connector_classes() -> dict[str, type[Connector]]:
    """Every installed connector class by ``kind``. A broken plugin fails loudly, naming itself."""
    found: dict[str, type[Connector]] = {}
    for ep in entry_points(group=GROUP):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Connector)):
            raise TypeError(f"entry point {ep.name} = {ep.value} is not a Connector subclass")
        if cls.kind in found and found[cls.kind] is not cls:
            raise TypeError(f"two connectors claim kind {cls.kind!r}: {found[cls.kind]!r} and {cls!r}")
        found[cls.kind] = cls
    return found


def get_connector_class(kind: str) -> type[Connector]:
    try:
        return connector_classes()[kind]
    except KeyError:
        known = ", ".join(sorted(connector_classes())) or "none"
        raise ConnectorError(f"no connector for kind {kind!r} (installed: {known})") from None
