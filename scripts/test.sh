#!/usr/bin/env bash
# Run the whole test suite, after setting up whatever is missing (see setup.sh).
# Extra arguments go to pytest, e.g.  scripts/test.sh -k sandbox -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests bench
.venv/bin/python -m pytest "$@"
# The same tests, but the browser test, with the lowest dependency versions pyproject.toml
# allows (set SM_MAGICS_SKIP_FLOORS=1 to skip them).
if [ -z "${SM_MAGICS_SKIP_FLOORS:-}" ]; then
  bash scripts/test-floors.sh "$@"
fi
