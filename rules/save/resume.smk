# Once per run, before any job: hold the cache's run lock, and drop what cannot be trusted,
# so that exactly those images are saved again (failed ones, saves whose folders or blobs are
# missing or damaged, leftovers of killed jobs).
from pathlib import Path

from hangar.runlock import RunLockError, hold_destination_lock, hold_run_lock
from hangar.safedelete import UnsafeCacheError
from hangar.save.archive import damaged_archive
from hangar.save.cachecheck import invalidate_stale
from hangar.skopeo import stop_on_sigterm
from hangar.cli.logview import announce_run
from hangar.save.preflight import PreflightError, check
from hangar.workflowlog import quiet_missing_backups

if workflow.is_main_process:
    # A first run has no earlier saved list to put back when its step fails: nothing to say.
    quiet_missing_backups(logger)
    announce_run(logger, SETTINGS, IMAGE_LIST)
    for skipped in IMAGE_LIST.skipped:
        logger.warning(f"WARNING: {skipped}")
    try:
        RUN_LOCK = hold_run_lock(CACHE)
        DESTINATION_LOCK = hold_destination_lock(SETTINGS.destination)
        CHECK = invalidate_stale(CACHE, IMAGES, SETTINGS.verify)
    except (RunLockError, UnsafeCacheError) as error:
        raise WorkflowError(str(error)) from None
    # An archive file deleted or cut short since: forget the record, so it is written again.
    if problem := damaged_archive(CACHE, SETTINGS.destination):
        logger.warning(f"writing the archive again: {problem}")
        Path(ARCHIVE_RECORD).unlink(missing_ok=True)
    if CHECK.removed_blobs:
        logger.warning(
            f"removed {len(CHECK.removed_blobs)} damaged blob(s) from the cache"
        )
    if CHECK.retried:
        logger.info(
            f"saving {len(CHECK.retried)} image(s) again: failed or damaged last time"
        )


# Before any download (onstart: real runs only, not dry runs or --lint): one line per mistake,
# instead of one failure per image. And as Snakemake's SIGTERM lets running jobs finish, which
# a hung copy never does, SIGTERM stops the skopeo children first: the run ends within seconds.
onstart:
    stop_on_sigterm()
    # the images to download: those without a status the resume check kept
    preflight = [ref for i, ref in IMAGES.items() if i not in CHECK.trusted]
    if config.get("preflight", True) and preflight:
        try:
            check(
                SETTINGS.arch,
                SETTINGS.os,
                preflight,
                SETTINGS.tls_verify,
                SETTINGS.cert_dir,
                JOB_OPTIONS.credentials_registry,
            )
        except PreflightError as error:
            raise WorkflowError(str(error)) from None
