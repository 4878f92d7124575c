"""Snakemake glue: `hangar verify` of the archive; its full output to the log, the verdict to
the output (the last line: OK or FAILED)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from hangar.verify import main

lines: list[str] = []
status = main([str(snakemake.params.destination)], out=lines.append)
Path(snakemake.log[0]).write_text("".join(f"{line}\n" for line in lines))
if status != 0:
    sys.exit(f"{lines[-1] if lines else 'verify failed'} (details: {snakemake.log[0]})")
Path(snakemake.output[0]).write_text(lines[-1] + "\n")
