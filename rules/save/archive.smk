# Stage 2: pack what was saved into the archive (gzip, zstd or a plain directory).


rule archive:
    input:
        saved_list=SAVED_LIST,
    output:
        update(ARCHIVE_RECORD),
    log:
        "logs/archive.log",
    conda:
        "../../envs/hangar-save.yaml"
    threads: 8  # scaled down to --cores locally; profiles/slurm sets it for clusters
    params:
        cache=CACHE,
        destination=SETTINGS.destination,
        compress=SETTINGS.compress,
        part_size=SETTINGS.part_size,
    script:
        "../../scripts/archive.py"
