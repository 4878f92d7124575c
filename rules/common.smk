# Parsing, ids and input functions shared by the rules (no rules here).
# Runs in every process that parses the workflow, cluster jobs included: keep it cheap.
from pathlib import Path

from hangar.save.cachecheck import invalidate_stale
from hangar.imagelist import ImageListError, read_image_list
from hangar.runlock import RunLockError, hold_destination_lock, hold_run_lock
from hangar.safedelete import UnsafeCacheError
from hangar.save.archive import damaged_archive
from hangar.save.image import JobOptions, run_job
from hangar.save.savedlist import run_job as write_saved_lists
from hangar.settings import ConfigError, Settings
from hangar.skopeo import credentials_registry, stop_on_sigterm
from hangar.status import status_dir

try:
    SETTINGS = Settings.from_config(config)
    ENTRIES = read_image_list(SETTINGS.file, SETTINGS.source)
except (ConfigError, ImageListError) as error:
    raise WorkflowError(f"{error}") from None

IMAGES = {entry.ref.image_id: entry.ref for entry in ENTRIES}
CACHE = SETTINGS.cache
STATUS_DIR = status_dir(CACHE)
SAVED_LIST = CACHE / "saved-images-list.json"
ARCHIVE_RECORD = f"{SETTINGS.destination}.sha256"

# How image jobs reach the registry. Not params: changing these must not re-save anything.
JOB_OPTIONS = JobOptions(
    cache=CACHE,
    credentials_registry=credentials_registry(
        SETTINGS.source, (ref.registry for ref in IMAGES.values())
    ),
    tls_verify=SETTINGS.tls_verify,
    cert_dir=SETTINGS.cert_dir,
    retry_times=SETTINGS.retry_times,
    retry_delay=SETTINGS.retry_delay,
    timeout=SETTINGS.timeout,
    lines={entry.ref.image_id: entry.line_numbers for entry in ENTRIES},
)

if workflow.is_main_process:
    try:
        RUN_LOCK = hold_run_lock(CACHE)
        DESTINATION_LOCK = hold_destination_lock(SETTINGS.destination)
        # Failed images, and saves whose folders or blobs are missing or damaged, are redone.
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


wildcard_constraints:
    image=r"[A-Za-z0-9._-]+",


def image_reference(wildcards):
    return str(IMAGES[wildcards.image])


def all_statuses(wildcards):
    return [STATUS_DIR / f"{image_id}.json" for image_id in IMAGES]
