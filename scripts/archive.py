"""Snakemake glue: pack the saved images of the cache into the archive and its .sha256 record."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from hangar.save.archive import build_archive

params = snakemake.params
with open(snakemake.log[0], "w") as log:
    print(f"archiving {snakemake.input.saved_list} to {params.destination}", file=log)
    result = build_archive(
        Path(params.cache),
        Path(params.destination),
        params.compress,
        params.part_size,
        snakemake.threads,
    )
    state = "written" if result.rebuilt else "already up to date, kept"
    print(
        f"{params.destination}: {len(result.files)} file(s), {result.bytes} bytes, {state}; "
        f"checksums in {result.checksums}",
        file=log,
    )
