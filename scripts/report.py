"""Snakemake glue: write save-report.html and save-report.csv from the image statuses."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from hangar.imagelist import load_image_list
from hangar.save.report import human_size, read_statuses, write_report
from hangar.status import unoffered_warning

params = snakemake.params
statuses = read_statuses(Path(path) for path in snakemake.input.statuses)
unoffered = unoffered_warning((status for _, status in statuses), params.arch, params.os)
summary = write_report(
    statuses,
    Path(snakemake.output.html),
    Path(snakemake.output.csv),
    str(params.cache),
    invalid=load_image_list(params.image_list, params.source).skipped,
    warnings=[unoffered] if unoffered else [],
)
with open(snakemake.log[0], "w") as log:
    print(
        f"{summary['images']} image(s): {summary['ok']} saved, {summary['failed']} failed, "
        f"{summary['skipped']} without a matching platform, {summary['invalid']} invalid line(s) "
        f"skipped; {summary['platforms']} platform(s), {summary['artifacts']} artifact(s), "
        f"{human_size(summary['bytes'])}, {summary['seconds']:.1f} s of job time, "
        f"{summary['retries']} retries",
        file=log,
    )
    if unoffered:
        print(unoffered, file=log)
