#!/usr/bin/env bash
# Run the tests in a second environment, .venv-floors, holding the lowest version of every
# dependency that pyproject.toml allows (uv's lowest-direct resolution), so the floors it
# states are floors that work. Left out, as the main suite runs them: the browser test and
# the whole-notebook runs of the tutorials (marker `tutorial`), whose product code the other
# tests run too; and the files that exercise the sandbox's own job runner and the Docker
# engine's behaviour (stops, faults, entrypoints, a Studio space, blob mounting, jobs on several
# instances), and the comparison, load, planted-secrets and randomized bad-input tests (whole
# flows, or the same magics again), whose calls into the libraries are the ones the kept files
# make. Extra arguments go to pytest.
# Needs what setup.sh prepares (the Docker engine, the base image, uv in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
FLOORS=.venv-floors
STAMP="$FLOORS/.sm-magics-installed"
WANT=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  printf '\n==> Installing the lowest allowed versions into %s\n' "$FLOORS" >&2
  rm -rf "$FLOORS"
  .venv/bin/uv venv -q -p "$(.venv/bin/python -c 'import sys; print(sys._base_executable)')" "$FLOORS"
  .venv/bin/uv pip install -q --python "$FLOORS/bin/python" --resolution lowest-direct -e ".[test]"
  echo "$WANT" > "$STAMP"
fi
"$FLOORS/bin/python" - <<'PY'
import importlib.metadata as m
names = ("ipython", "traitlets", "boto3", "docker", "ipywidgets", "pyyaml", "regex", "moto")
print("lowest allowed versions:", ", ".join(f"{n} {m.version(n)}" for n in names))
PY
exec "$FLOORS/bin/python" -m pytest -m "not browser and not tutorial" \
  --ignore=tests/test_executor.py --ignore=tests/test_faults.py \
  --ignore=tests/test_entrypoint.py --ignore=tests/test_studio_profile.py \
  --ignore=tests/test_blob_mounting.py --ignore=tests/test_multihost.py \
  --ignore=tests/test_compare.py --ignore=tests/test_load.py --ignore=tests/test_secrets.py \
  --ignore=tests/test_bad_input.py "$@"
