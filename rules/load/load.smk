# Extract the archive once (a checkpoint: the saved list inside says which jobs exist), then
# one job per image pushes its platforms and writes its tag; then the failed list.
from hangar.load.extract import run_job as extract_archive
from hangar.load.push import run_job as load_item
from hangar.load.summary import write_summary


checkpoint extract:
    output:
        EXTRACTED,
    log:
        "logs/load/extract.log",
    localrule: True
    run:
        extract_archive(LOAD.source, LOAD.cache, log[0])


# As the save jobs: a `run:` job in Snakemake's own process, no interpreter start per image.
rule load_image:
    input:
        EXTRACTED,
    output:
        status=LOAD_STATUS_DIR / "{item}.json",
    log:
        "logs/load/{item}.log",
    resources:
        registry_pushes=1,
    params:
        # where the image goes: a change pushes it again
        line=item_line,
        registry=LOAD.push.registry,
        default_project=LOAD.push.default_project,
        format=LOAD.push.manifest_format,
    run:
        load_item(load_items()[wildcards.item], output.status, log[0], LOAD.push)


rule load_summary:
    input:
        all_load_statuses,
    output:
        LOAD_SUMMARY,
    log:
        "logs/load/summary.log",
    localrule: True
    params:
        failed=LOAD.failed,
    run:
        write_summary(input, output[0], params.failed)
