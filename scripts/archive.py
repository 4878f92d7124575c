"""Snakemake glue: pack the saved images of the cache into the archive and its .sha256 record."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from hangar.save.archive import build_archive  # noqa: E402

params = snakemake.params  # noqa: F821
with open(snakemake.log[0], "w") as log:  # noqa: F821
    print(f"archiving {snakemake.input.saved_list} to {params.destination}", file=log)  # noqa: F821
    result = build_archive(
        Path(params.cache),
        Path(params.destination),
        params.compress,
        params.part_size,
        snakemake.threads,  # noqa: F821
    )
    state = "written" if result.rebuilt else "already up to date, kept"
    print(
        f"{params.destination}: {len(result.files)} file(s), {result.bytes} bytes, {state}; "
        f"checksums in {result.checksums}",
        file=log,
    )
