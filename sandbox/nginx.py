"""nginx in front of gunicorn for the demo, the tests and the benchmark, as docker-compose.yml runs it.

Plain Python, no Django::

    python -m sandbox.nginx install                      # once per machine; prints the binary's path
    python -m sandbox.nginx run --dir D --listen 127.0.0.1:8000 --upstream 127.0.0.1:8001

``install`` takes Debian's nginx package and unpacks it into a folder of the project's own
(``~/.cache/controlplane/nginx``, beside the uv and the Airflow venv): ``apt-get download`` and
``dpkg-deb -x``, never ``apt-get install``. Installing the package would run its maintainer scripts, which
enable and start a system nginx on port 80 (at once on a machine with systemd, at the next boot otherwise):
a daemon nobody asked for. Unpacked, it is one binary that runs only when started here. Its libraries
(libc, libcrypt, libpcre2, libssl, zlib) are on every Debian that runs Python 3.11.

``run`` writes the configuration into ``D`` (the main file and ``deploy/nginx/controlplane.conf.template``
filled in, as the official image's template step does in compose), then becomes nginx in the foreground
(``daemon off``): the caller stops it like any child. It listens where ``--listen`` says (loopback for the
demo, the tests and the benchmark) and keeps its pid file, logs and temporary files in ``D``.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "nginx" / "controlplane.conf.template"
CACHE = Path(os.environ.get("CONTROLPLANE_CACHE") or Path.home() / ".cache" / "controlplane") / "nginx"
BINARY = CACHE / "usr" / "sbin" / "nginx"
APT_TIMEOUT_S = 600.0
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class NginxError(RuntimeError):
    """nginx could not be installed or configured; the message says why."""


def _run(cmd: Sequence[str], *, cwd: Path | None = None, timeout: float = APT_TIMEOUT_S) -> str:
    try:
        result = subprocess.run(
            list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise NginxError(f"{' '.join(cmd)} did not finish within {timeout:.0f} s") from exc
    except FileNotFoundError as exc:
        raise NginxError(f"{cmd[0]} not found: installing nginx needs Debian's apt-get and dpkg-deb") from exc
    if result.returncode != 0:
        raise NginxError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr.strip()[-2000:]}")
    return result.stdout + result.stderr


def _works(binary: Path) -> bool:
    try:
        return subprocess.run([str(binary), "-v"], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def executable() -> str:
    """The nginx binary ``install`` unpacked; a clear error when it is not there."""
    if not BINARY.is_file():
        raise NginxError(f"no nginx at {BINARY}: run `python -m sandbox.nginx install` (bin/test and bin/demo do)")
    return str(BINARY)


def install() -> Path:
    """Unpack Debian's nginx package into ``CACHE`` unless a working binary is there; return its path.

    Needs root (or sudo) for ``apt-get update`` only; the download and the unpacking change nothing
    outside ``CACHE`` and start nothing."""
    if _works(BINARY):
        return BINARY
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with (CACHE.parent / "nginx.lock").open("w") as lock:  # one install at a time (two checkouts, one cache)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _works(BINARY):
            _unpack()
    return BINARY


def _unpack() -> None:
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    _run([*sudo, "apt-get", "update", "-qq"])
    partial = CACHE.with_name(CACHE.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="nginx-deb-") as tmp:
        _run(["apt-get", "download", "-qq", "nginx"], cwd=Path(tmp))
        debs = sorted(Path(tmp).glob("nginx_*.deb"))
        if not debs:
            raise NginxError("apt-get download nginx left no nginx_*.deb")
        _run(["dpkg-deb", "-x", str(debs[-1]), str(partial)])
    if not _works(partial / "usr" / "sbin" / "nginx"):
        raise NginxError(f"the unpacked nginx does not run: {partial / 'usr/sbin/nginx'} -v failed")
    shutil.rmtree(CACHE, ignore_errors=True)
    partial.rename(CACHE)  # complete or absent, never half-unpacked


def render_template(*, listen: str, upstream: str) -> str:
    """deploy/nginx/controlplane.conf.template with its two ``${CONTROLPLANE_*}`` names filled in."""
    for name, value in (("listen", listen), ("upstream", upstream)):
        if not re.fullmatch(r"[A-Za-z0-9_.:\[\]-]+", value):
            raise NginxError(f"--{name} {value!r} is not host:port")
    text = TEMPLATE.read_text()
    text = text.replace("${CONTROLPLANE_LISTEN}", listen).replace("${CONTROLPLANE_UPSTREAM}", upstream)
    left = re.findall(r"\$\{CONTROLPLANE_\w+\}", text)
    if left:
        raise NginxError(f"{TEMPLATE} has names this script does not fill in: {sorted(set(left))}")
    return text


def write_config(directory: Path, *, listen: str, upstream: str) -> Path:
    """Write ``directory/nginx.conf`` (the main file) and ``directory/controlplane.conf``; return the main file.

    The main file is the official image's, cut to what a foreground nginx under ``directory`` needs: one
    worker, errors on stderr, pid file, access log and temporary files in ``directory``."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    for name in TEMP_DIRS:
        (directory / f"{name}_temp").mkdir(exist_ok=True)
    (directory / "controlplane.conf").write_text(render_template(listen=listen, upstream=upstream))
    # As root nginx runs its worker as `nobody`, which could not reach a private folder (the demo's state,
    # a test's tmp dir) for its temporary files: the worker runs as the user who started it, as gunicorn does.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    main = directory / "nginx.conf"
    main.write_text(
        "# Written by sandbox/nginx.py.\n"
        f"{user}"
        "worker_processes 1;\n"
        "error_log stderr warn;\n"
        f"pid {directory / 'nginx.pid'};\n"
        "events {\n    worker_connections 1024;\n}\n"
        "http {\n"
        "    default_type application/octet-stream;\n"
        f"    access_log {directory / 'access.log'};\n"
        + "".join(f"    {name}_temp_path {directory / f'{name}_temp'};\n" for name in TEMP_DIRS)
        + f"    include {directory / 'controlplane.conf'};\n"
        "}\n"
    )
    return main


def command(directory: Path) -> list[str]:
    """The command that runs nginx in the foreground on ``write_config``'s files in ``directory``."""
    directory = directory.resolve()
    return [executable(), "-p", f"{directory}/", "-c", str(directory / "nginx.conf"), "-g", "daemon off;"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.nginx", description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="unpack Debian's nginx into the project's cache (once per machine)")
    run = sub.add_parser("run", help="write the configuration and run nginx in the foreground")
    run.add_argument("--dir", type=Path, required=True, help="configuration, pid file, logs, temporary files")
    run.add_argument("--listen", required=True, help="host:port nginx listens on")
    run.add_argument("--upstream", required=True, help="host:port of gunicorn")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "install":
            print(install())
            return 0
        write_config(args.dir, listen=args.listen, upstream=args.upstream)
        cmd = command(args.dir)
    except NginxError as exc:
        print(f"sandbox.nginx: {exc}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    os.execv(cmd[0], cmd)  # the caller's child becomes nginx: its pid, its signals


if __name__ == "__main__":
    sys.exit(main())
