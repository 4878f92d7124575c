#!/usr/bin/env bash
# Install what is needed, then save a demo set of images from a local registry into ./demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash dev/setup.sh
python3 dev/demo.py
