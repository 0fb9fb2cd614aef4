#!/usr/bin/env bash
# Run the whole test suite, after setting up whatever is missing (see setup.sh).
# Extra arguments go to pytest, e.g.  scripts/test.sh -k sandbox -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests bench
exec .venv/bin/python -m pytest "$@"
