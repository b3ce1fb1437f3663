"""The BigQuery connector: tables, materialized views, datasets and the project's jobs."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from connectors.base import Connector, ConnectorError, HealthResult
from connectors.bigquery.checks import (
    DuplicatesCheck,
    FreshnessCheck,
    MatviewStalenessCheck,
    NullsCheck,
    OrphansCheck,
    PartitionRowCountsCheck,
    SlotUsageCheck,
)
from connectors.bigquery.client import Session
from connectors.bigquery.config import LOCATOR_MODELS, BigQueryConfig, DatasetLocator
from connectors.bigquery.verbs import BackfillVerb, RefreshMartVerb, RestoreTableVerb


class BigQueryConnector(Connector):
    """Google BigQuery through the real ``google-cloud-bigquery`` client: refresh marts, backfill date
    partitions with a cost estimate, restore a table from time travel; check freshness, data quality (nulls,
    duplicates, orphans), partition row counts, materialized view staleness and slot use.

    Config is :class:`BigQueryConfig`; the secret ``credentials_json`` is a service account key (optional
    against an emulator, ``api_endpoint``). Target kinds: ``table``, ``matview``, ``dataset``, ``project``.
    """

    kind = "bigquery"
    config_model = BigQueryConfig
    secret_names = ("credentials_json",)
    verbs = (RefreshMartVerb, BackfillVerb, RestoreTableVerb)
    checks = (
        FreshnessCheck,
        NullsCheck,
        DuplicatesCheck,
        OrphansCheck,
        PartitionRowCountsCheck,
        MatviewStalenessCheck,
        SlotUsageCheck,
    )
    target_kinds = ("table", "matview", "dataset", "project")
    locator_models = LOCATOR_MODELS

    def __init__(self, config: BaseModel | Mapping[str, Any], secrets: Mapping[str, str]) -> None:
        if not isinstance(config, BigQueryConfig):
            raw = config.model_dump() if isinstance(config, BaseModel) else dict(config)
            config = BigQueryConfig.model_validate(raw)
        super().__init__(config, secrets)
        self.cfg: BigQueryConfig = config
        self._session: Session | None = None

    def session(self) -> Session:
        """This connector's client session (made on first use: instances are built per use)."""
        if self._session is None:
            self._session = Session(self.cfg, self.secrets)
        return self._session

    def health(self) -> HealthResult:
        """A ``datasets.list`` round trip with timing; a failure is reported (ok=False), not raised."""
        started = time.perf_counter()
        try:
            session = self.session()
            datasets = session.call(
                "checking health",
                lambda: list(
                    session.client.list_datasets(max_results=1, retry=session.retry, timeout=self.cfg.timeout_s)
                ),
            )
        except ConnectorError as exc:
            return HealthResult(ok=False, summary=exc.message)
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        seen = "datasets readable" if datasets else "no dataset yet"
        return HealthResult(ok=True, summary=f"{self.cfg.where}: {seen}", latency_ms=latency_ms)

    def metadata(self, what: str, **filters: Any) -> list[dict[str, Any]]:
        """``datasets``, or ``tables`` / ``matviews`` (filter ``dataset=``, else every dataset) for pickers."""
        if what not in ("datasets", "tables", "matviews"):
            raise ConnectorError(f"bigquery connector cannot list {what!r} (it lists: datasets, tables, matviews)")
        session, timeout = self.session(), self.cfg.timeout_s
        datasets = session.call(
            "listing datasets",
            lambda: [d.dataset_id for d in session.client.list_datasets(retry=session.retry, timeout=timeout)],
        )
        if what == "datasets":
            return [{"value": name, "label": name, "dataset": name} for name in sorted(datasets)]
        wanted = filters.get("dataset")
        if wanted is not None:
            DatasetLocator.model_validate({"dataset": wanted})
        kind = "TABLE" if what == "tables" else "MATERIALIZED_VIEW"
        rows = []
        for dataset in sorted(d for d in datasets if wanted is None or d == wanted):
            for item in sorted(self._tables(dataset), key=lambda t: t.table_id):
                if item.table_type != kind:
                    continue
                partitioning = item.time_partitioning.field if item.time_partitioning else None
                rows.append(
                    {"value": f"{dataset}.{item.table_id}", "label": f"{dataset}.{item.table_id}", "dataset": dataset,
                     "name": item.table_id, "partition_column": partitioning}
                )  # fmt: skip
        return rows

    def _tables(self, dataset: str) -> list[Any]:
        session = self.session()
        return list(
            session.call(
                f"listing the tables of {dataset}",
                lambda: list(session.client.list_tables(dataset, retry=session.retry, timeout=self.cfg.timeout_s)),
            )
        )
