"""A GCS emulator (``gcp-storage-emulator``) on loopback for the demo, tests and benchmarks: the quarantine
connector's gcsfs client talks to it over HTTP as it would to Google.

    python -m sandbox.gcs serve --port 4443 --data-dir DIR   (foreground; what ``start_gcs`` runs detached)

The emulator's HTTP server is single-threaded with the standard library's listen backlog of 5: gcsfs opens
several connections at once and the sixth would be refused, so ``serve`` raises the backlog first. Its
objects live in ``--data-dir`` (they survive a restart). ``sandbox.services`` starts and stops it with
Postgres and Redis.
"""

from __future__ import annotations

import argparse
import http.client
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox.processes import LOOPBACK, Detached, wait_until

READY_TIMEOUT_S = 20.0
LISTEN_BACKLOG = 128


def gcs_ping(host: str, port: int, *, timeout: float = 1.0) -> bool:
    """True if the emulator answers its health check (``GET /``) on host:port."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@dataclass(frozen=True)
class GcsServer:
    """A running sandbox GCS emulator."""

    directory: Path
    port: int
    host: str = LOOPBACK

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def process(self) -> Detached:
        return _process(self.directory)

    def stop(self) -> bool:
        return self.process.stop()


def _process(directory: Path) -> Detached:
    return Detached(directory, "gcs", marker="sandbox.gcs")


def start_gcs(root: Path, port: int, *, log_requests: bool = False) -> GcsServer:
    """Start (or reuse) the emulator under ``ROOT/gcs`` on 127.0.0.1:``port``, detached; wait until it answers.
    ``log_requests``: one line per HTTP request in ``gcs.log`` (a benchmark counts them)."""
    server = GcsServer(directory=root.resolve() / "gcs", port=port)
    (server.directory / "data").mkdir(parents=True, exist_ok=True)
    if server.process.pid() is not None:
        if gcs_ping(server.host, port):
            return server
        server.stop()
    cmd = [
        sys.executable, "-m", "sandbox.gcs", "serve", "--port", str(port), "--data-dir", str(server.directory / "data"),
        *(["--log-requests"] if log_requests else []),
    ]  # fmt: skip
    proc = server.process.spawn(cmd)
    if wait_until(lambda: gcs_ping(server.host, port), [proc], READY_TIMEOUT_S):
        return server
    tail = server.process.log_tail()
    server.stop()
    raise RuntimeError(f"the GCS emulator on port {port} did not answer within {READY_TIMEOUT_S:.0f} s\n{tail}")


def gcs_running(root: Path) -> bool:
    return _process(root.resolve() / "gcs").pid() is not None


def stop_gcs(root: Path) -> bool:
    """Stop the emulator of ``root`` if it runs; True if it was running. Idempotent."""
    return _process(root.resolve() / "gcs").stop()


def serve(port: int, data_dir: Path, *, log_requests: bool = False) -> None:
    """Run the emulator in the foreground until SIGTERM; with ``log_requests`` its access log (one
    ``"GET /path HTTP/1.1" 200`` line per request) goes to stderr."""
    import http.server
    import logging

    from gcp_storage_emulator.server import create_server

    if log_requests:
        logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
        logging.getLogger("gcp_storage_emulator.server").setLevel(logging.INFO)

    http.server.HTTPServer.request_queue_size = LISTEN_BACKLOG
    server = create_server(LOOPBACK, port, in_memory=False, data_dir=str(data_dir))
    signal.signal(signal.SIGTERM, lambda *_: (server.stop(), sys.exit(0)))
    server.run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.gcs", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run the emulator in the foreground")
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--data-dir", type=Path, required=True)
    run.add_argument("--log-requests", action="store_true", help="one line per HTTP request on stderr")
    args = parser.parse_args(argv)
    serve(args.port, args.data_dir, log_requests=args.log_requests)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
