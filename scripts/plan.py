"""Snakemake glue: resolve the list's images without downloading layers; write save-plan.csv."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from hangar.imagelist import read_image_list  # noqa: E402
from hangar.save.plan import make_plan, summary_lines, table_lines, write_csv  # noqa: E402
from hangar.settings import Settings  # noqa: E402

settings = Settings.from_config(snakemake.config)  # noqa: F821
entries = read_image_list(settings.file, settings.source)
plan = make_plan(settings, entries, snakemake.threads)  # noqa: F821
write_csv(plan, Path(snakemake.output[0]))  # noqa: F821
with open(snakemake.log[0], "w") as log:  # noqa: F821
    for line in table_lines(plan) + [""] + summary_lines(plan):
        print(line, file=log)
for line in summary_lines(plan):
    print(line, file=sys.stderr)
