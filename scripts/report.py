"""Snakemake glue: write save-report.html and save-report.csv from the image statuses."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from hangar.save.report import human_size, read_statuses, write_report

statuses = read_statuses(Path(path) for path in snakemake.input.statuses)
summary = write_report(
    statuses,
    Path(snakemake.output.html),
    Path(snakemake.output.csv),
    str(snakemake.params.cache),
)
with open(snakemake.log[0], "w") as log:
    print(
        f"{summary['images']} image(s): {summary['ok']} saved, {summary['failed']} failed, "
        f"{summary['skipped']} without a matching platform; {summary['platforms']} platform(s), "
        f"{human_size(summary['bytes'])}, {summary['seconds']:.1f} s of job time, "
        f"{summary['retries']} retries",
        file=log,
    )
