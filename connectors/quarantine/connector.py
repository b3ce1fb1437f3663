"""The quarantine connector: a Silver base path's quarantined records (local or GCS), read with DuckDB."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from connectors.base import Connector, ConnectorError, HealthResult
from connectors.quarantine.checks import (
    QuarantineRateCheck,
    QuarantineReasonsCheck,
    QuarantineRecordsCheck,
    QuarantineStorageCheck,
)
from connectors.quarantine.config import LOCATOR_MODELS, QuarantineConfig
from connectors.quarantine.review import QuarantineReviewVerb
from connectors.quarantine.store import Store
from connectors.quarantine.verbs import Cleanup, Discard, Keep, Release


class QuarantineConnector(Connector):
    """Quarantined records of one source (seed 003, section 5).

    Config is :class:`QuarantineConfig`; the only secret is ``gcs_token`` (a service account's JSON, for a
    ``gs://`` root). Target kinds: ``quarantine`` (the whole source, locator ``{}``) and
    ``quarantine_table`` (locator ``{"table"}``).
    """

    kind = "quarantine"
    config_model = QuarantineConfig
    secret_names = ("gcs_token",)
    target_kinds = ("quarantine", "quarantine_table")
    locator_models = LOCATOR_MODELS
    verbs = (QuarantineReviewVerb, Release, Discard, Keep, Cleanup)
    checks = (QuarantineRateCheck, QuarantineReasonsCheck, QuarantineStorageCheck, QuarantineRecordsCheck)

    def __init__(self, config: BaseModel | Mapping[str, Any], secrets: Mapping[str, str]) -> None:
        if not isinstance(config, QuarantineConfig):
            raw = config.model_dump() if isinstance(config, BaseModel) else dict(config)
            config = QuarantineConfig.model_validate(raw)
        super().__init__(config, secrets)
        self.cfg: QuarantineConfig = config
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.cfg, self.secrets)
        return self._store

    def health(self) -> HealthResult:
        """List the quarantine directory, timed; a failure is reported (ok=False), not raised."""
        started = time.perf_counter()
        try:
            tables = self.store.tables()
        except ConnectorError as exc:
            return HealthResult(ok=False, summary=exc.message)
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        return HealthResult(
            ok=True, summary=f"{self.cfg.root}: {len(tables)} quarantined tables", latency_ms=latency_ms
        )

    def metadata(self, what: str, **filters: Any) -> list[dict[str, Any]]:
        """``tables`` (the quarantined tables) for catalog pickers; other names are errors."""
        if what != "tables":
            raise ConnectorError(f"quarantine connector cannot list {what!r} (it lists: tables)")
        return [{"table": table} for table in self.store.tables()]
