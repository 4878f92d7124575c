"""Every benchmark of the project in one run: one table of ratios against the raw baselines.

    python bench/run_all.py [save_bench options, e.g. --images 150 --cores 8]

Runs bench/save_bench.py (full save against raw parallel skopeo, resume, the archive in-process and
as the archive job through Snakemake against `tar | cat`, pigz and the zstd CLI on the saved cache,
whose layers are gzip data with random payloads; no-op rerun; dry runs of 1,000 / 3,000 / 10,000
lines; memory), then bench/archive_bench.py on a synthetic cache of gzip layers. Every ratio is
ours against its baseline on the same data in the same run; the first line gives the core count.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> int:
    save = subprocess.run([sys.executable, str(BENCH / "save_bench.py"), *sys.argv[1:]])
    archive = subprocess.run([sys.executable, str(BENCH / "archive_bench.py"), "--repeat", "3"])
    return save.returncode or archive.returncode


if __name__ == "__main__":
    sys.exit(main())
