"""Snakemake glue: write save-report.html and save-report.csv from the image statuses, the
archive and the run's context."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from hangar.imagelist import load_image_list
from hangar.layout import status_dir
from hangar.save.report import (
    earlier_ids,
    gather_run,
    human_duration,
    human_size,
    read_statuses,
    write_report,
)
from hangar.status import unoffered_warning

params = snakemake.params
image_list = load_image_list(params.image_list, params.source)
image_ids = dict.fromkeys(entry.ref.image_id for entry in image_list.entries)
paths = [status_dir(params.cache) / f"{image_id}.json" for image_id in image_ids]
statuses = read_statuses(paths)
run = gather_run(
    Path(params.cache),
    Path(params.destination),
    Path(params.verify_log),
    image_list=str(params.image_list),
    arch=params.arch,
    os=params.os,
    source=params.source,
    finished=time.time(),
)
unoffered = unoffered_warning((status for _, status in statuses), params.arch, params.os)
summary = write_report(
    statuses,
    Path(snakemake.output.html),
    Path(snakemake.output.csv),
    str(params.cache),
    invalid=image_list.skipped,
    run=run,
    earlier=earlier_ids(paths, run.started),
    warnings=[unoffered] if unoffered else [],
)
wall = run.wall_seconds
with open(snakemake.log[0], "w") as log:
    print(
        f"{summary['images']} image(s): {summary['ok']} saved, {summary['failed']} failed, "
        f"{summary['skipped']} without a matching platform, {summary['invalid']} invalid line(s) "
        f"skipped; {summary['platforms']} platform(s), {summary['artifacts']} artifact(s), "
        f"{human_size(summary['bytes'])}"
        + (f" ({human_size(run.unique_bytes)} unique)" if run.unique_bytes is not None else "")
        + f", {summary['seconds']:.1f} s of job time, {summary['retries']} retries; "
        f"{summary['earlier']} from an earlier run"
        + (f"; wall time {human_duration(wall)}" if wall is not None else ""),
        file=log,
    )
    if unoffered:
        print(unoffered, file=log)
