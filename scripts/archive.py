"""Snakemake glue: pack the saved images of the cache into the archive and its .sha256 record."""

import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from hangar.reasons import step_error_line
from hangar.save.archive import build_archive

params = snakemake.params
with open(snakemake.log[0], "w") as log:
    print(f"archiving {snakemake.input.saved_list} to {params.destination}", file=log)
    try:
        result = build_archive(
            Path(params.cache),
            Path(params.destination),
            params.compress,
            params.part_size,
            snakemake.threads,
            check_space=not snakemake.config.get("ignore_free_space", False),
        )
    except Exception as error:  # the cause goes to the log, whose last line the run shows
        traceback.print_exc(file=log)
        print(step_error_line(error, params.destination), file=log)
        sys.exit(1)
    state = "written" if result.rebuilt else "already up to date, kept"
    print(
        f"{params.destination}: {len(result.files)} file(s), {result.bytes} bytes, {state}; "
        f"checksums in {result.checksums}",
        file=log,
    )
