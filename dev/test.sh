#!/usr/bin/env bash
# Install what is needed, then run the whole test suite (unit, end-to-end, cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
bash dev/setup.sh --tests
python3 -m pytest -q "$@"
