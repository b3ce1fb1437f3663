# Sourced by bin/demo and bin/test: make sure uv and the locked environment are here.
# Needs only Python 3.11 and pip on the machine.
set -euo pipefail
export UV_COMPILE_BYTECODE=1          # this environment sets PYTHONDONTWRITEBYTECODE: imports are 2-3x slower without
export UV_PYTHON="${UV_PYTHON:-python3.11}"
export UV_PROJECT_ENVIRONMENT="${UV_PROJECT_ENVIRONMENT:-$PWD/.venv}"
if ! command -v uv >/dev/null 2>&1; then
  if ! python3 -m uv --version >/dev/null 2>&1; then
    echo "==> installing uv with pip" >&2
    python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
  fi
  uv() { python3 -m uv "$@"; }
fi
echo "==> syncing the locked environment (uv sync --frozen)" >&2
uv sync --frozen --quiet
