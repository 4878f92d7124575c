# Stage 1: one job per image copies its selected platforms into the shared cache; then the
# saved list and the failed list are written from the jobs' statuses.
from hangar.save.image import run_job
from hangar.save.savedlist import run_job as write_saved_lists


# A `run:` job runs in Snakemake's own process (no interpreter start per image), so it uses
# Snakemake's environment: run Snakemake from envs/hangar-save.yaml when using conda.
rule save_image:
    output:
        status=STATUS_DIR / "{image}.json",
    log:
        "logs/save/{image}.log",
    resources:
        registry_pulls=1,
    params:
        # what the image job saves: a change re-saves the image
        reference=image_reference,
        arch=SETTINGS.arch,
        os=SETTINGS.os,
        no_arch_os_fail=SETTINGS.no_arch_os_fail,
    run:
        run_job(
            IMAGES[wildcards.image],
            list(params.arch),
            list(params.os),
            params.no_arch_os_fail,
            output.status,
            log[0],
            JOB_OPTIONS,
        )


rule saved_list:
    input:
        all_statuses,
    output:
        saved_list=update(SAVED_LIST),
    log:
        "logs/saved_list.log",
    localrule: True
    params:
        failed=SETTINGS.failed,
    run:
        write_saved_lists(IMAGE_LIST, input, output.saved_list, params.failed, log[0])
