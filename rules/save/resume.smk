# Once per run, before any job: hold the cache's run lock, and drop what cannot be trusted,
# so that exactly those images are saved again (failed ones, saves whose folders or blobs are
# missing or damaged, leftovers of killed jobs).
from hangar.runlock import RunLockError, hold_run_lock
from hangar.save.cachecheck import invalidate_stale
from hangar.logview import announce_run
from hangar.preflight import PreflightError, check
from hangar.workflowlog import quiet_missing_backups

if workflow.is_main_process:
    # A first run has no earlier saved list to put back when its step fails: nothing to say.
    quiet_missing_backups(logger)
    announce_run(logger, SETTINGS, IMAGE_LIST)
    for skipped in IMAGE_LIST.skipped:
        logger.warning(f"WARNING: {skipped}")
    try:
        RUN_LOCK = hold_run_lock(CACHE)
    except RunLockError as error:
        raise WorkflowError(str(error)) from None
    CHECK = invalidate_stale(CACHE, IMAGES, SETTINGS.verify)
    if CHECK.removed_blobs:
        logger.warning(
            f"removed {len(CHECK.removed_blobs)} damaged blob(s) from the cache"
        )
    if CHECK.retried:
        logger.info(
            f"saving {len(CHECK.retried)} image(s) again: failed or damaged last time"
        )


# Before any download (onstart: real runs only, not dry runs or --lint): one line per mistake,
# instead of one failure per image.
onstart:
    preflight = [
        ref for i, ref in IMAGES.items() if not (STATUS_DIR / f"{i}.json").exists()
    ]
    if config.get("preflight", True) and preflight:
        try:
            check(
                SETTINGS.arch,
                SETTINGS.os,
                (ref.registry for ref in preflight),
                SETTINGS.tls_verify,
            )
        except PreflightError as error:
            raise WorkflowError(str(error)) from None
