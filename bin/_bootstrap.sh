# Sourced by bin/demo and bin/test: make sure uv and the locked environment are here.
# Needs only Python 3.11 and pip on the machine (Debian's own Python included: PEP 668 refuses installs into
# it, so uv goes into a folder of the project's own with `pip install --target`, which that rule leaves alone).
# The uv used is always that pinned one, whatever else is on PATH; its path is exported as CONTROLPLANE_UV for
# the code that calls uv itself (sandbox/venvs.py builds the sandbox tools' venvs with it).
set -euo pipefail
export UV_COMPILE_BYTECODE=1          # this environment sets PYTHONDONTWRITEBYTECODE: imports are 2-3x slower without
export UV_NATIVE_TLS=1                # the system's CA store, as pip and curl use (a proxy that inspects TLS has its CA there)
export UV_PYTHON="${UV_PYTHON:-python3.11}"
export UV_PROJECT_ENVIRONMENT="${UV_PROJECT_ENVIRONMENT:-$PWD/.venv}"
CONTROLPLANE_UV_VERSION="0.9.30"
_uv_home="${CONTROLPLANE_CACHE:-$HOME/.cache/controlplane}/uv-$CONTROLPLANE_UV_VERSION"  # beside the Airflow venv
if [ ! -x "$_uv_home/bin/uv" ]; then
  echo "==> installing uv $CONTROLPLANE_UV_VERSION into $_uv_home (pip --target)" >&2
  rm -rf "$_uv_home.partial"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
    --target "$_uv_home.partial" "uv==$CONTROLPLANE_UV_VERSION"
  rm -rf "$_uv_home" && mv "$_uv_home.partial" "$_uv_home"   # complete or absent, never half-installed
fi
export CONTROLPLANE_UV="$_uv_home/bin/uv"
uv() { "$CONTROLPLANE_UV" "$@"; }
echo "==> syncing the locked environment (uv sync --frozen)" >&2
uv sync --frozen --quiet
