"""Talking to Airflow 3's REST API through ``apache-airflow-client``: tokens, timeouts, error mapping.

Airflow 3 authenticates API calls with a JWT from ``POST /auth/token``. Tokens are cached per
(base URL, user) in the process and renewed once when a call answers 401, so a long verification wait
outlives a short token lifetime. Every call carries a timeout. Errors leave as ConnectorError with
Airflow's own ``detail`` message: timeouts, refused connections, 408, 429 and 5xx from in front of
Airflow (502/503/504, a proxy's page) are transient; 4xx are permanent, and so is a 500 carrying Airflow's
own error body while Airflow says its metadatabase is healthy: Airflow failed on this very request (a query
its database refused, a DAG it cannot load), and the same request fails the same way again.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from airflow_client import client as af
from airflow_client.client.exceptions import ApiException, OpenApiException

from connectors.airflow.config import AirflowConfig
from connectors.base import ConnectorError

T = TypeVar("T")

_tokens: dict[tuple[str, str], str] = {}
_tokens_lock = threading.Lock()


def _detail(body: str | None) -> str:
    """Airflow's error message from a response body (FastAPI ``{"detail": ...}``), else the body."""
    if not body:
        return ""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:500]
    detail = data.get("detail", data) if isinstance(data, dict) else data
    if isinstance(detail, list):  # validation errors: [{"loc": [...], "msg": ...}]
        return "; ".join(
            f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg', d)}" if isinstance(d, dict) else str(d)
            for d in detail
        )[:500]
    return str(detail)[:500]


def airflow_error_body(body: str | None) -> bool:
    """Whether a response body is Airflow's own JSON error (FastAPI's ``{"detail": ...}``), rather than the
    page of a proxy or load balancer in front of it."""
    try:
        data = json.loads(body or "")
    except ValueError:
        return False
    return isinstance(data, dict) and "detail" in data


def translate(exc: Exception, config: AirflowConfig, doing: str, *, airflow_healthy: bool = False) -> ConnectorError:
    """One ConnectorError for any failure of a call, transient or permanent, never with a secret.

    ``airflow_healthy``: the caller read Airflow's health after this error and its metadatabase was healthy,
    so a 500 in Airflow's own words is about the request (permanent), not an outage."""
    where = f"Airflow {config.base_url}"
    if isinstance(exc, ApiException):
        status = exc.status or 0
        detail = _detail(exc.body) or exc.reason or ""
        refused = status == 500 and airflow_healthy and airflow_error_body(exc.body)
        transient = (status >= 500 and not refused) or status in (408, 429)
        if refused:
            detail += " (Airflow is healthy: it failed on this request itself)"
        kind = "will retry" if transient else "not retried"
        return ConnectorError(f"{where}: {doing} failed: HTTP {status} {detail} ({kind})", transient=transient)
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError | TimeoutError):
        return ConnectorError(f"{where}: {doing} failed: {type(exc).__name__}: {exc} (will retry)", transient=True)
    if isinstance(exc, OpenApiException | ValueError):
        return ConnectorError(f"{where}: {doing}: unexpected answer: {exc}", transient=False)
    raise exc


class AirflowClient:
    """The API classes of apache-airflow-client bound to one Airflow, with token renewal and timeouts."""

    def __init__(self, config: AirflowConfig, secrets: dict[str, str]) -> None:
        self.config = config
        self._password = secrets.get("password")
        self._static_token = secrets.get("token")
        self._key = (config.base_url, config.username or "")
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=config.connect_timeout_s, read=config.timeout_s), retries=False
        )
        configuration = af.Configuration(host=config.base_url)
        configuration.retries = False
        configuration.verify_ssl = config.verify_tls
        self.api = af.ApiClient(configuration)
        self.dags = af.DAGApi(self.api)
        self.runs = af.DagRunApi(self.api)
        self.task_instances = af.TaskInstanceApi(self.api)
        self.tasks = af.TaskApi(self.api)
        self.backfills = af.BackfillApi(self.api)
        self.import_errors = af.ImportErrorApi(self.api)
        self.monitor = af.MonitorApi(self.api)

    # ------------------------------------------------------------------------------------------ tokens

    def _fetch_token(self) -> str:
        if self._static_token:
            return self._static_token
        if not self.config.username or self._password is None:
            raise ConnectorError(
                f"Airflow {self.config.base_url}: no credentials: set the connection's username and a "
                "'password' secret reference, or a 'token' secret reference"
            )
        url = f"{self.config.base_url}/auth/token"
        body = json.dumps({"username": self.config.username, "password": self._password}).encode()
        try:
            resp = self._http.request("POST", url, body=body, headers={"Content-Type": "application/json"})
        except urllib3.exceptions.HTTPError as exc:
            raise translate(exc, self.config, "getting an API token") from None
        if resp.status != 201 and resp.status != 200:
            detail = _detail(resp.data.decode(errors="replace"))
            transient = resp.status >= 500
            raise ConnectorError(
                f"Airflow {self.config.base_url}: getting an API token failed: HTTP {resp.status} {detail}",
                transient=transient,
            )
        token = json.loads(resp.data).get("access_token")
        if not token:
            raise ConnectorError(f"Airflow {self.config.base_url}: /auth/token answered without an access_token")
        return str(token)

    def _token(self, *, renew: bool = False) -> str:
        with _tokens_lock:
            token = None if renew else _tokens.get(self._key)
            if token is None:
                token = self._fetch_token()
                _tokens[self._key] = token
            self.api.configuration.access_token = token
            return token

    # ------------------------------------------------------------------------------------------- calls

    def call(self, doing: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call an apache-airflow-client method with the timeout; renew the token once on 401."""
        kwargs.setdefault("_request_timeout", (self.config.connect_timeout_s, self.config.timeout_s))
        self._token()
        for attempt in (1, 2):
            try:
                return fn(*args, **kwargs)
            except ApiException as exc:
                if exc.status == 401 and attempt == 1 and not self._static_token:
                    self._token(renew=True)  # expired or revoked: one fresh token, one more try
                    continue
                healthy = exc.status == 500 and airflow_error_body(exc.body) and self._metadatabase_healthy()
                raise translate(exc, self.config, doing, airflow_healthy=healthy) from None
            except (urllib3.exceptions.HTTPError, OSError, OpenApiException, ValueError) as exc:
                raise translate(exc, self.config, doing) from None
        raise AssertionError("unreachable")

    def _metadatabase_healthy(self) -> bool:
        """After a 500: does Airflow say its metadatabase is healthy? (An outage answers 500 "Database error"
        too; then the error is transient.) False when the health read itself fails."""
        try:
            info = self.monitor.get_health(_request_timeout=(self.config.connect_timeout_s, self.config.timeout_s))
        except (OpenApiException, urllib3.exceptions.HTTPError, OSError, ValueError):
            return False
        return getattr(getattr(info, "metadatabase", None), "status", None) == "healthy"

    def health(self) -> tuple[bool, str, float]:
        started = time.monotonic()
        info = self.call("reading health", self.monitor.get_health)
        elapsed = (time.monotonic() - started) * 1000
        parts = {name: getattr(getattr(info, name, None), "status", None) for name in ("metadatabase", "scheduler")}
        ok = all(status == "healthy" for status in parts.values())
        return ok, ", ".join(f"{k} {v}" for k, v in parts.items()), elapsed


_clients: dict[tuple[str, str], AirflowClient] = {}
_clients_lock = threading.Lock()


def shared_client(config: AirflowConfig, secrets: dict[str, str]) -> AirflowClient:
    """One client per Airflow connection setup in this process, so calls reuse its keep-alive connections
    instead of opening a new pool (and a new TCP connection) per action, plan or check.

    Keyed by the whole config and a digest of the secrets: an edited connection gets a new client. Its
    connection pools are thread-safe; the client holds no per-call state.
    """
    digest = hashlib.sha256(json.dumps(secrets, sort_keys=True).encode()).hexdigest()
    key = (config.model_dump_json(), digest)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            if len(_clients) >= 100:  # connections edited over and over: drop the old ones
                _clients.clear()
            client = _clients[key] = AirflowClient(config, secrets)
        return client
