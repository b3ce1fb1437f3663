"""Where a quarantine source's files are and how to open them: one fsspec filesystem (local, or GCS through
gcsfs) and DuckDB connections reading through it.

Paths handed around inside the connector are the filesystem's own (``/abs/path/...`` or
``bucket/prefix/...``); :meth:`Store.url` turns one into what DuckDB reads (``gs://bucket/...`` goes through
the gcsfs instance registered on the connection: DuckDB's httpfs cannot be installed offline).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import duckdb
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractBufferedFile

from connectors.base import ConnectorError
from connectors.quarantine.config import TABLE_NAME, QuarantineConfig

PARTITION = re.compile(r"^ingest_dt=(\d{4}-\d{2}-\d{2})$")
QUARANTINE_DIR = "quarantine"
# the connector's own files (release ledger, keep markers) live beside the tables, under a name no table has
CONTROL_DIR = "_control"


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    #: last modification as the listing reported it (None when it did not)
    mtime: datetime | None = None


def _file_info(name: str, entry: Mapping[str, Any]) -> FileInfo:
    mtime = entry.get("mtime")
    if isinstance(mtime, int | float):  # local listings: seconds since the epoch
        mtime = datetime.fromtimestamp(mtime, UTC)
    return FileInfo(path=name, size=int(entry.get("size") or 0), mtime=mtime if isinstance(mtime, datetime) else None)


class Store:
    """The files of one source. Cheap to build; builds its filesystem client once."""

    def __init__(self, cfg: QuarantineConfig, secrets: Mapping[str, str]) -> None:
        self.cfg = cfg
        self.remote = cfg.root.startswith("gs://")
        self.fs: AbstractFileSystem = self._filesystem(cfg, secrets)
        self.root = cfg.root.removeprefix("gs://") if self.remote else cfg.root
        self.errors = self._errors(self.remote)

    @staticmethod
    def _errors(remote: bool) -> tuple[type[Exception], ...]:
        """What a failed storage call raises (and is worth retrying): OSError (the disk; gcsfs's connection
        errors) and, on GCS, gcsfs's HttpError (a 5xx or 429 left after its own retries) and aiohttp's
        client errors. Imported only for a GCS root (gcsfs takes a while to import)."""
        if not remote:
            return (OSError,)
        from aiohttp import ClientError
        from gcsfs.retry import HttpError

        return (OSError, TimeoutError, ClientError, HttpError)

    @staticmethod
    def _filesystem(cfg: QuarantineConfig, secrets: Mapping[str, str]) -> AbstractFileSystem:
        if not cfg.root.startswith("gs://"):
            return LocalFileSystem()
        # gcsfs.core's class, not the package's default export: that one probes every bucket for the
        # hierarchical-namespace layout (a gRPC call the emulator and older buckets do not answer)
        from gcsfs.core import GCSFileSystem

        credentials: Any = "anon"  # no secret: anonymous (the emulator, a public bucket)
        if secrets.get("gcs_token"):
            try:
                credentials = json.loads(secrets["gcs_token"])
            except ValueError:
                raise ConnectorError("the gcs_token secret is not a service account's JSON") from None
        return GCSFileSystem(
            project=cfg.gcs_project or "controlplane",
            token=credentials,
            endpoint_url=cfg.gcs_endpoint,
            requests_timeout=cfg.timeout_seconds,
            timeout=cfg.timeout_seconds,
            # every read sees the bucket as it is now: no listing cache, and no instance (with its cache)
            # shared with an earlier connector in this process
            use_listings_cache=False,
            skip_instance_cache=True,
        )

    # ------------------------------------------------------------------------------------------- layout

    def join(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def url(self, path: str) -> str:
        """What DuckDB reads for a filesystem path (or glob)."""
        return f"gs://{path}" if self.remote else path

    def table_dir(self, table: str, *, quarantined: bool) -> str:
        return self.join(QUARANTINE_DIR, table) if quarantined else self.join(table)

    def partition_dir(self, table: str, day: date, *, quarantined: bool) -> str:
        return f"{self.table_dir(table, quarantined=quarantined)}/ingest_dt={day.isoformat()}"

    def control_dir(self, *parts: str) -> str:
        return self.join(QUARANTINE_DIR, CONTROL_DIR, *parts)

    # ------------------------------------------------------------------------------------------ listing

    def ls(self, path: str) -> list[dict[str, Any]]:
        try:
            return list(self.fs.ls(path, detail=True))
        except FileNotFoundError:
            return []
        except self.errors as exc:
            raise ConnectorError(f"listing {self.url(path)} failed: {exc}", transient=True) from None

    def tables(self) -> list[str]:
        """The tables that have a quarantine directory."""
        names = (entry["name"].rstrip("/").rsplit("/", 1)[-1] for entry in self.ls(self.join(QUARANTINE_DIR)))
        return sorted(n for n in names if n != CONTROL_DIR and TABLE_NAME.match(n))

    def days(self, table: str, *, quarantined: bool) -> list[date]:
        """The ``ingest_dt`` partitions of a table (quarantined or valid side)."""
        found = []
        for entry in self.ls(self.table_dir(table, quarantined=quarantined)):
            match = PARTITION.match(entry["name"].rstrip("/").rsplit("/", 1)[-1])
            if match and entry.get("type") == "directory":
                found.append(date.fromisoformat(match.group(1)))
        return sorted(found)

    def files(self, table: str, day: date, *, quarantined: bool) -> list[FileInfo]:
        """The parquet files of one partition, with their sizes."""
        return sorted(
            (
                _file_info(e["name"], e)
                for e in self.ls(self.partition_dir(table, day, quarantined=quarantined))
                if e.get("type") == "file" and e["name"].endswith(".parquet")
            ),
            key=lambda f: f.path,
        )

    def find(self, path: str) -> list[FileInfo]:
        """Every parquet file under ``path`` at any depth, with sizes (one listing request per 1000 objects on
        GCS instead of one per partition); [] when ``path`` does not exist."""
        try:
            found = self.fs.find(path, detail=True, withdirs=False)
        except FileNotFoundError:
            return []
        except self.errors as exc:
            raise ConnectorError(f"listing {self.url(path)} failed: {exc}", transient=True) from None
        return sorted(
            (
                _file_info(name, info)
                for name, info in found.items()
                if info.get("type") == "file" and name.endswith(".parquet")
            ),
            key=lambda f: f.path,
        )

    # ------------------------------------------------------------------------------------------- duckdb

    def open_listed(self, info: FileInfo) -> Any:
        """Open a listed file for reading: its size comes from the listing and each read fetches exactly the
        bytes asked with one ranged request (gcsfs' own files look the object up first and read ahead)."""
        return _RangeFile(self.fs, info)

    def read_range(self, path: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of a file, one request on GCS."""
        try:
            return bytes(self.fs.cat_file(path, start=start, end=end))
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise ConnectorError(f"reading {self.url(path)} failed: {exc}", transient=self.remote) from None

    @contextmanager
    def duckdb(self, listed: Iterable[FileInfo] = ()) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB connection that reads this store's files (and closes at the end). Without the ICU extension
        (it cannot be installed offline) DuckDB's time zone is UTC: timestamps read and compare in UTC.

        On GCS, DuckDB asks the filesystem for every file's glob, existence and size, several times per file;
        for the ``listed`` files those answers come from the listing instead of a request each."""
        con = duckdb.connect()
        try:
            if self.remote:
                con.register_filesystem(_ListedFileSystem(self, listed) if listed else self.fs)
            yield con
        except duckdb.IOException as exc:
            raise ConnectorError(f"reading the quarantine files failed: {exc}", transient=self.remote) from None
        finally:
            con.close()


class _RangeFile(AbstractBufferedFile):
    """A read-only file of known size whose reads are ranged reads of the filesystem (no read-ahead)."""

    def __init__(self, fs: AbstractFileSystem, info: FileInfo) -> None:
        super().__init__(fs, info.path, mode="rb", size=info.size, cache_type="none")

    def _fetch_range(self, start: int, end: int) -> bytes:
        return bytes(self.fs.cat_file(self.path, start=start, end=end))


class _ListedFileSystem(AbstractFileSystem):
    """The store's GCS filesystem as DuckDB sees it: glob, exists and info of listed files are answered from
    the listing and they open as :meth:`Store.open_listed` does; everything else goes to the store's
    filesystem."""

    protocol = ("gs", "gcs")
    cachable = False

    def __init__(self, store: Store, listed: Iterable[FileInfo]) -> None:
        super().__init__()
        self.store = store
        self.listed = {info.path: info for info in listed}

    def _known(self, path: str) -> FileInfo | None:
        return self.listed.get(path.removeprefix("gs://").removeprefix("gcs://"))

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        known = self._known(path)
        if known is None:
            return dict(self.store.fs.info(path, **kwargs))
        return {"name": known.path, "size": known.size, "type": "file"}

    def exists(self, path: str, **kwargs: Any) -> bool:
        return self._known(path) is not None or bool(self.store.fs.exists(path, **kwargs))

    def glob(self, path: str, **kwargs: Any) -> Any:
        known = self._known(path)
        return [known.path] if known is not None else self.store.fs.glob(path, **kwargs)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        return self.store.fs.ls(path, detail=detail, **kwargs)

    def modified(self, path: str) -> Any:
        known = self._known(path)
        return known.mtime if known is not None and known.mtime is not None else self.store.fs.modified(path)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        known = self._known(path)
        if known is not None and mode == "rb":
            return self.store.open_listed(known)
        return self.store.fs.open(path, mode, **kwargs)
