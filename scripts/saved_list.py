"""Snakemake glue: gather image statuses into saved-images-list.json and the failed list."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from hangar_save.savedlist import update_outputs  # noqa: E402

params = snakemake.params  # noqa: F821
summary = update_outputs(
    Path(params.image_list),
    params.source,
    [Path(path) for path in snakemake.input],  # noqa: F821
    Path(snakemake.output.saved_list),  # noqa: F821
    Path(params.failed),
)
with open(snakemake.log[0], "w") as log:  # noqa: F821
    print(
        f"saved {summary.saved_images} image(s), {summary.saved_platforms} platform(s); "
        f"{summary.failed} failed (listed in {params.failed}); "
        f"{summary.skipped} without a platform matching arch/os",
        file=log,
    )
if summary.saved_images == 0:  # as hangar: an archive of nothing is a failed save
    sys.exit(
        f"nothing was saved: {summary.failed} image(s) failed (listed in {params.failed}), "
        f"{summary.skipped} without a platform matching arch/os"
    )
