# Air-gap transfers of container images, as hangar v1.6 does them. A config with `file` is a
# save (image list -> one skopeo job per image -> shared OCI cache -> archive); a config with
# `archive` is a load (archive -> extracted once -> one push job per image -> registry).
import sys

from snakemake.utils import min_version, validate

min_version("9.0")
# The hangar package, importable from a plain checkout too.
sys.path.insert(0, workflow.basedir)

from hangar.settings import schema_error_line

LOADING = "archive" in config
try:
    validate(
        config,
        "schemas/load.schema.yaml" if LOADING else "schemas/config.schema.yaml",
        set_default=True,
    )
except WorkflowError as error:  # one line naming the key, not the whole schema
    raise WorkflowError(f"config: {schema_error_line(error)}") from None


if LOADING:

    include: "rules/load/common.smk"
    include: "rules/load/resume.smk"
    include: "rules/load/load.smk"

    rule all:
        default_target: True
        input:
            LOAD_SUMMARY,

else:

    include: "rules/save/common.smk"
    include: "rules/save/resume.smk"
    include: "rules/save/images.smk"
    include: "rules/save/archive.smk"
    include: "rules/save/report.smk"

    # The statuses are inputs of the target too: Snakemake would not look for a missing status
    # (an image to save again) upstream of an archive that is up to date.
    rule all:
        default_target: True
        input:
            all_statuses,
            ARCHIVE_RECORD,
            "save-report.html",
