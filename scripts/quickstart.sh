#!/usr/bin/env bash
# Run the quickstart notebook top to bottom in the sandbox (no AWS account needed),
# after setting up whatever is missing (see setup.sh). The executed notebook, with
# its outputs and widget state, is written to notebooks/executed/quickstart.ipynb.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m sm_magics run-notebook notebooks/quickstart.ipynb \
  --output notebooks/executed/quickstart.ipynb
