#!/usr/bin/env bash
# Install what the workflow, its demo and its tests need: Debian packages and the Python package.
# Idempotent: packages already present are not installed again.
set -euo pipefail
cd "$(dirname "$0")/.."

debian_packages=(skopeo docker-registry pigz zstd tar apache2-utils openssl)
# --tests: also what only the tests use (a headless browser that renders the save report;
# Slurm and munge for a single-node cluster)
if [[ " $* " == *" --tests "* ]]; then
    debian_packages+=(chromium slurm-wlm munge)
fi

missing=()
for package in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# editable_mode=compat: a path entry, so that Snakemake finds the logger plugin
# (snakemake_logger_plugin_hangar) by scanning sys.path, which it cannot do through the
# import hook of the default editable mode.
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    --config-settings editable_mode=compat -e ".[test]"
