#!/usr/bin/env bash
# A single-node Slurm cluster on this machine (its CPUs), to try the cluster profiles without one.
# As root, on Debian:
#   bash dev/slurm.sh start        # installs slurm-wlm and munge if missing; starts munged,
#                                  # slurmctld and slurmd; prints the variables to export
#   eval "$(bash dev/slurm.sh env)"
#   snakemake --profile profiles/slurm --slurm-status-command squeue --slurm-no-account \
#       --configfile my.yaml       # the shipped profile as it is: its jobs fit this node
#   bash dev/slurm.sh status       # sinfo and squeue
#   bash dev/slurm.sh stop
# Keys, configuration, state and logs live in $HANGAR_SLURM_DIR (default /tmp/hangar-slurm);
# the daemons listen on free ports of 127.0.0.1 and nothing outside that directory is changed.
set -euo pipefail
cd "$(dirname "$0")/.."

action="${1:-}"
state_dir="${HANGAR_SLURM_DIR:-/tmp/hangar-slurm}"
case "$action" in
    start | stop | status | env) ;;
    *)
        echo "usage: bash dev/slurm.sh start|stop|status|env  (state in \$HANGAR_SLURM_DIR)" >&2
        exit 2
        ;;
esac

if [[ "$action" == start ]]; then
    missing=()
    for package in slurm-wlm munge; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$package")
    done
    if ((${#missing[@]})); then
        echo "installing Debian packages: ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
fi

exec python3 tests/support/slurm.py "$action" "$state_dir"
