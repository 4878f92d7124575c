"""Snakemake glue: write save-report.html and save-report.csv from the image statuses."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from hangar.save.report import human_size, read_statuses, write_report  # noqa: E402

statuses = read_statuses(Path(path) for path in snakemake.input.statuses)  # noqa: F821
summary = write_report(
    statuses,
    Path(snakemake.output.html),  # noqa: F821
    Path(snakemake.output.csv),  # noqa: F821
    str(snakemake.params.cache),  # noqa: F821
)
with open(snakemake.log[0], "w") as log:  # noqa: F821
    print(
        f"{summary['images']} image(s): {summary['ok']} saved, {summary['failed']} failed, "
        f"{summary['skipped']} without a matching platform; {summary['platforms']} platform(s), "
        f"{human_size(summary['bytes'])}, {summary['seconds']:.1f} s of job time, "
        f"{summary['retries']} retries",
        file=log,
    )
