"""bin/_bootstrap.sh on a machine as the README promises it: Debian's own Python (PEP 668 refuses installs into
it), a fresh HOME, no uv anywhere. The bootstrap installs its own pinned uv, exports it as CONTROLPLANE_UV, and
the code that calls uv itself (the Airflow sandbox's venv builder) finds that one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def _system_python() -> str:
    """Debian's /usr/bin/python3 where there is one (the machine the README names), else this Python."""
    return "/usr/bin/python3" if Path("/usr/bin/python3").is_file() else sys.executable


def test_bootstrap_installs_its_own_uv_where_none_is_reachable(tmp_path: Path) -> None:
    home, tools = tmp_path / "home", tmp_path / "bin"
    home.mkdir()
    tools.mkdir()
    (tools / "python3").symlink_to(_system_python())
    env = {
        "HOME": str(home),
        "PATH": f"{tools}:{SYSTEM_PATH}",
        "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv"),
        # The packages themselves come from this machine's uv cache; what is new is everything else.
        "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR") or str(Path.home() / ".cache" / "uv"),
    }
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "PIP_CERT"):  # a TLS-inspecting proxy's CA, where set
        if name in os.environ:
            env[name] = os.environ[name]
    nothing = subprocess.run(
        ["bash", "-c", "command -v uv || python3 -m uv --version"], env=env, capture_output=True, timeout=60
    )
    assert nothing.returncode != 0, "the test's machine must have no uv reachable"

    script = (
        "source bin/_bootstrap.sh >/dev/null 2>&1 && "
        'echo "uv=$CONTROLPLANE_UV" && (type -P uv >/dev/null && echo on-path || echo not-on-path) && '
        '"$UV_PROJECT_ENVIRONMENT/bin/python" -c "from sandbox.venvs import uv_command; print(*uv_command())"'
    )
    result = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.split()
    uv = lines[0].removeprefix("uv=")
    assert uv.startswith(str(home / ".cache" / "controlplane")), uv
    assert os.access(uv, os.X_OK)
    assert "not-on-path" in lines, "the bootstrap must not rely on a uv on PATH"
    assert lines[-1] == uv, "the Airflow venv builder must use the uv the bootstrap installed"
    assert shutil.which("django-admin", path=str(tmp_path / "venv" / "bin")), "the locked environment was synced"
