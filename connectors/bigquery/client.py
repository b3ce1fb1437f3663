"""The BigQuery client session: bounded calls, jobs tagged with the action, errors as ConnectorErrors.

Every API call has ``timeout_s`` per request and a retry budget of the same length (the library's default
would retry for 10 minutes); the library's job-level retry (re-running a failed query for up to 40
minutes) is off: the action runner retries transient errors itself. Waiting for a job is bounded by
``job_timeout_s``. Every job carries ``maximum_bytes_billed``. A job that changes something gets a
deterministic id derived from the action id (:func:`job_id`) and the label ``cp_action``: a re-delivered
``execute`` finds the job (``get_job``) and waits for it or reads its result instead of running it again.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import requests
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.exceptions import GoogleAuthError
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_RETRY
from google.oauth2 import service_account

from connectors.base import ConnectorError
from connectors.bigquery.config import BigQueryConfig

# https://cloud.google.com/bigquery/docs/error-messages: these reasons may succeed when retried later.
_TRANSIENT_REASONS = {"backendError", "internalError", "rateLimitExceeded", "jobBackendError", "jobInternalError"}
_ADVICE = {
    "bytesBilledLimitExceeded": "the query would bill more than maximum_bytes_billed: narrow the range, or raise "
    "the connection's maximum_bytes_billed",
    "accessDenied": "the service account lacks a permission on this object",
    "notFound": "the object does not exist: check the catalog target",
    "duplicate": "the object already exists",
}
Param = bigquery.ScalarQueryParameter


def job_id(action_id: str, step: str) -> str:
    """The deterministic job id of ``step`` of an action (BigQuery allows letters, digits, ``_`` and ``-``)."""
    clean = re.sub(r"[^A-Za-z0-9_-]", "_", f"cp_{action_id}_{step}")
    return clean[:1024]


def action_label(action_id: str) -> str:
    """The ``cp_action`` label value: lower-case letters, digits, ``_`` and ``-``, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "_", action_id.lower())[:63]


def param(name: str, value: Any) -> Param:
    """A query parameter typed from its Python value."""
    if isinstance(value, bool):
        return Param(name, "BOOL", value)
    if isinstance(value, int):
        return Param(name, "INT64", value)
    if isinstance(value, float):
        return Param(name, "FLOAT64", value)
    if isinstance(value, datetime):
        return Param(name, "TIMESTAMP", value)
    if isinstance(value, date):
        return Param(name, "DATE", value)
    return Param(name, "STRING", str(value))


def _reasons(exc: gexc.GoogleAPICallError) -> list[str]:
    return [str(error.get("reason", "")) for error in (exc.errors or []) if isinstance(error, Mapping)]


def translate(exc: BaseException, config: BigQueryConfig, doing: str) -> ConnectorError:
    """A library error as a transient or permanent ConnectorError with an actionable message."""
    if isinstance(exc, gexc.GoogleAPICallError):
        reasons = _reasons(exc)
        code = exc.code or 0
        transient = code in (429, 500, 502, 503, 504) or bool(set(reasons) & _TRANSIENT_REASONS)
        if "bytesBilledLimitExceeded" in reasons:
            transient = False
        detail = (exc.message or str(exc)).strip().replace("\n", " ")
        advice = next((_ADVICE[r] for r in reasons if r in _ADVICE), "will retry" if transient else "not retried")
        why = f" [{', '.join(r for r in reasons if r)}]" if any(reasons) else ""
        return ConnectorError(f"{config.where}: error while {doing}: {detail}{why} ({advice})", transient=transient)
    if isinstance(exc, concurrent.futures.TimeoutError | TimeoutError | requests.Timeout | gexc.RetryError):
        return ConnectorError(f"{config.where}: timed out while {doing} ({exc}); will retry", transient=True)
    if isinstance(exc, requests.ConnectionError):
        return ConnectorError(
            f"cannot reach {config.where} while {doing}: {exc}; will retry, check the endpoint", transient=True
        )
    if isinstance(exc, GoogleAuthError):
        return ConnectorError(f"{config.where}: credentials refused while {doing}: {exc} (fix the credentials_json)")
    return ConnectorError(f"{config.where}: unexpected error while {doing}: {type(exc).__name__}: {exc}")


_CAUGHT = (
    gexc.GoogleAPICallError,
    gexc.RetryError,
    concurrent.futures.TimeoutError,
    TimeoutError,
    requests.RequestException,
    GoogleAuthError,
)


def _credentials(config: BigQueryConfig, secrets: Mapping[str, str]) -> Credentials:
    raw = secrets.get("credentials_json")
    if raw:
        try:
            info = json.loads(raw)
            return service_account.Credentials.from_service_account_info(info)
        except (ValueError, KeyError) as exc:
            raise ConnectorError(f"{config.where}: the credentials_json secret is not a service account key") from exc
    if config.api_endpoint:
        return AnonymousCredentials()  # an emulator: no Google credentials
    raise ConnectorError(
        f"{config.where}: no credentials_json secret; it is optional only with an api_endpoint (an emulator)"
    )


class Session:
    """One connection's client with the config's bounds; every method turns library errors into
    ConnectorErrors naming ``doing``."""

    def __init__(self, config: BigQueryConfig, secrets: Mapping[str, str]) -> None:
        self.config = config
        options = ClientOptions(api_endpoint=config.api_endpoint) if config.api_endpoint else None
        self.client = bigquery.Client(
            project=config.project,
            credentials=_credentials(config, secrets),
            location=config.location,
            client_options=options,
        )
        self.retry = DEFAULT_RETRY.with_timeout(config.timeout_s)

    def close(self) -> None:
        self.client.close()

    def call(self, doing: str, work: Callable[[], Any]) -> Any:
        """``work()`` with library errors translated."""
        try:
            return work()
        except ConnectorError:
            raise
        except _CAUGHT as exc:
            raise translate(exc, self.config, doing) from exc

    def job_config(
        self, params: Sequence[Param] = (), *, action_id: str | None = None, dry_run: bool = False
    ) -> bigquery.QueryJobConfig:
        labels = {"cp_action": action_label(action_id)} if action_id else {}
        return bigquery.QueryJobConfig(
            query_parameters=list(params),
            labels=labels,
            dry_run=dry_run,
            use_query_cache=not dry_run,
            maximum_bytes_billed=self.config.maximum_bytes_billed,
        )

    def rows(self, sql: str, params: Sequence[Param] = (), *, doing: str) -> list[tuple[Any, ...]]:
        """Run a read-only query and return its rows as tuples."""
        return [tuple(row) for row in self.result(sql, params, doing=doing)]

    def result(self, sql: str, params: Sequence[Param] = (), *, doing: str) -> Any:
        """Run a read-only query and return its RowIterator (rows and schema)."""

        def run() -> Any:
            job = self.client.query(
                sql, job_config=self.job_config(params), retry=self.retry, timeout=self.config.timeout_s, job_retry=None
            )
            return job.result(timeout=self.config.job_timeout_s, retry=self.retry, job_retry=None)

        return self.call(doing, run)

    def dry_run_bytes(self, sql: str, params: Sequence[Param] = (), *, doing: str) -> int:
        """The bytes BigQuery says ``sql`` would process (a dry run: nothing runs, nothing is billed)."""

        def run() -> int:
            config = self.job_config(params, dry_run=True)
            job = self.client.query(
                sql, job_config=config, retry=self.retry, timeout=self.config.timeout_s, job_retry=None
            )
            return int(job.total_bytes_processed or 0)

        return int(self.call(doing, run))

    def find_job(self, job_id: str, *, doing: str) -> bigquery.QueryJob | None:
        """The job with this id, or None when there is none."""

        def run() -> Any:
            try:
                return self.client.get_job(job_id, retry=self.retry, timeout=self.config.timeout_s)
            except gexc.NotFound:
                return None

        found = self.call(doing, run)
        return found if isinstance(found, bigquery.QueryJob) or found is None else None

    def run_once(
        self,
        job_id: str,
        sql: str,
        params: Sequence[Param],
        *,
        action_id: str,
        doing: str,
        created: Callable[[bigquery.QueryJob], None] | None = None,
    ) -> tuple[bigquery.QueryJob, bool]:
        """Run ``sql`` as job ``job_id`` once: a job already there (an earlier delivery) is waited for and
        returned with True instead of running again. ``created(job)`` is called once the job exists. A job of
        this id that failed earlier is a permanent error (BigQuery does not reuse job ids)."""
        job = self.find_job(job_id, doing=doing)
        already = job is not None
        if job is None:

            def insert() -> Any:
                try:
                    return self.client.query(
                        sql, job_config=self.job_config(params, action_id=action_id), job_id=job_id,
                        retry=self.retry, timeout=self.config.timeout_s, job_retry=None,
                    )  # fmt: skip
                except gexc.Conflict:  # another delivery created it between our look and our insert
                    return None

            job = self.call(doing, insert)
            if job is None:
                job, already = self.find_job(job_id, doing=doing), True
                if job is None:
                    raise ConnectorError(f"{self.config.where}: job {job_id} exists but cannot be read", transient=True)
        if created is not None:
            created(job)
        if job.state != "DONE" or not already:
            self.settle(job, doing=doing)
        self.raise_if_failed(job, doing=doing)
        return job, already

    def settle(self, job: bigquery.QueryJob, *, doing: str) -> None:
        """Wait (bounded by ``job_timeout_s``) until ``job`` is done; its failure becomes a ConnectorError."""
        try:
            self.call(doing, lambda: job.result(timeout=self.config.job_timeout_s, retry=self.retry, job_retry=None))
        except ConnectorError as exc:
            raise ConnectorError(f"job {job.job_id}: {exc.message}", transient=exc.transient) from exc

    def raise_if_failed(self, job: bigquery.QueryJob, *, doing: str) -> None:
        """A permanent ConnectorError if ``job`` ended with an error (BigQuery does not reuse job ids)."""
        if job.error_result:
            message = job.error_result.get("message", "failed")
            reason = job.error_result.get("reason", "")
            raise ConnectorError(
                f"{self.config.where}: job {job.job_id} of this action failed while {doing}: {message} [{reason}] "
                "(BigQuery does not reuse job ids: request a new action)"
            )
