"""Snakemake glue: write save-report.html and save-report.csv from the image statuses."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from hangar.imagelist import load_image_list
from hangar.layout import status_dir
from hangar.save.report import human_size, read_statuses, write_report

params = snakemake.params
image_list = load_image_list(params.image_list, params.source)
image_ids = dict.fromkeys(entry.ref.image_id for entry in image_list.entries)
statuses = read_statuses(status_dir(params.cache) / f"{image_id}.json" for image_id in image_ids)
summary = write_report(
    statuses,
    Path(snakemake.output.html),
    Path(snakemake.output.csv),
    str(params.cache),
    invalid=image_list.skipped,
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
