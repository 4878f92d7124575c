# Stage 1: one job per image copies its selected platforms into the shared cache.


rule save_image:
    output:
        status=STATUS_DIR / "{image}.json",
    log:
        "logs/save/{image}.log",
    conda:
        "../envs/hangar-save.yaml"
    resources:
        registry_pulls=1,
    params:
        reference=image_reference,
        arch=",".join(SETTINGS.arch),
        os=",".join(SETTINGS.os),
        no_arch_os_fail="--no-arch-os-fail" if SETTINGS.no_arch_os_fail else "",
    shell:
        "{SAVE_COMMAND} --reference {params.reference:q} --arch {params.arch:q}"
        " --os {params.os:q} {params.no_arch_os_fail} --status {output.status:q}"
        " > {log:q} 2>&1"


rule saved_list:
    input:
        all_statuses,
    output:
        saved_list=update(SAVED_LIST),
    log:
        "logs/saved_list.log",
    localrule: True
    conda:
        "../envs/hangar-save.yaml"
    params:
        image_list=SETTINGS.file,
        source=SETTINGS.source,
        failed=SETTINGS.failed,
    script:
        "../scripts/saved_list.py"
