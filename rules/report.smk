# After the save: the report of what was saved (always); on demand, a check of the archive
# (`snakemake verify`) and a plan of a save made before downloading (`snakemake save-plan.csv`).
import shlex
import sys

VERIFY_COMMAND = shlex.join(
    [
        "env",
        f"PYTHONPATH={workflow.basedir}",
        sys.executable,
        "-m",
        "hangar.verify",
    ]
)


rule report:
    input:
        statuses=all_statuses,
        saved_list=SAVED_LIST,
    output:
        html=report("save-report.html", category="Save"),
        csv="save-report.csv",
    log:
        "logs/report.log",
    localrule: True
    conda:
        "../envs/hangar-save.yaml"
    params:
        cache=CACHE,
        image_list=SETTINGS.file,
        source=SETTINGS.source,
    script:
        "../scripts/report.py"


rule verify:
    input:
        ARCHIVE_RECORD,
    output:
        "save-verify.txt",
    log:
        "logs/verify.log",
    localrule: True
    conda:
        "../envs/hangar-save.yaml"
    params:
        command=VERIFY_COMMAND,
        destination=SETTINGS.destination,
    shell:
        "{params.command} {params.destination:q} > {log:q} 2>&1"
        " && tail -n 1 {log:q} > {output:q}"


rule plan:
    input:
        image_list=SETTINGS.file,
    output:
        "save-plan.csv",
    log:
        "logs/plan.log",
    localrule: True
    conda:
        "../envs/hangar-save.yaml"
    threads: 4
    params:
        arch=",".join(SETTINGS.arch),
        os=",".join(SETTINGS.os),
        source=SETTINGS.source,
    script:
        "../scripts/plan.py"
