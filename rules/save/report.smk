# After the save: the report of what was saved (always); on demand, a check of the archive
# (`snakemake verify`) and a plan of a save made before downloading (`snakemake save-plan.csv`).
from hangar.save.plan import write_plan


# The statuses are not inputs: the saved list, written from all of them, is newer than any
# (10,000 inputs fewer for Snakemake to resolve); the job reads those of the list.
# The archive's files and checksums, and the verify verdict when its log is newer than the
# archive, are read from disk; the run's start is the run lock's.
rule report:
    # in Snakemake's process, as the image jobs: a script job costs an interpreter start and
    # Snakemake's import (~1 s of CPU); pandas is imported here, not when the workflow is parsed
    input:
        saved_list=SAVED_LIST,
        archive=ARCHIVE_RECORD,
        verified=verify_first,
    output:
        html=report("save-report.html", category="Save"),
        csv="save-report.csv",
    log:
        "logs/report.log",
    localrule: True
    params:
        cache=CACHE,
        image_list=SETTINGS.file,
        source=SETTINGS.source,
        arch=SETTINGS.arch,
        os=SETTINGS.os,
        destination=SETTINGS.destination,
        verify_log=VERIFY_LOG,
    run:
        from hangar.save.report import run_job as write_report

        write_report(output.html, output.csv, log[0], **params)


rule verify:
    input:
        ARCHIVE_RECORD,
    output:
        "save-verify.txt",
    log:
        VERIFY_LOG,
    localrule: True
    conda:
        "../../envs/hangar-save.yaml"
    params:
        destination=SETTINGS.destination,
    script:
        "../../scripts/verify.py"


rule plan:
    input:
        image_list=SETTINGS.file,
    output:
        "save-plan.csv",
    log:
        "logs/plan.log",
    localrule: True
    conda:
        "../../envs/hangar-save.yaml"
    threads: 4
    params:
        # what the plan depends on besides the list: a change re-plans
        arch=SETTINGS.arch,
        os=SETTINGS.os,
        source=SETTINGS.source,
    run:
        write_plan(SETTINGS, ENTRIES, output[0], log[0], threads)
