# Parsing, ids and input functions shared by the save rules: definitions only, no side effects.
# Runs in every process that parses the workflow, cluster jobs included: keep it cheap.
import gc

from hangar.imagelist import ImageListError, load_image_list
from hangar.layout import checksum_path, saved_list_path, status_dir
from hangar.save.image import JobOptions
from hangar.settings import ConfigError, Settings
from hangar.skopeo import credentials_registry

try:
    SETTINGS = Settings.from_config(config)
    IMAGE_LIST = load_image_list(SETTINGS.file, SETTINGS.source, SETTINGS.strict)
except (ConfigError, ImageListError) as error:
    raise WorkflowError(f"{error}") from None

ENTRIES = IMAGE_LIST.entries
# Snakemake's DAG of a long list is millions of objects that live until the end; Python's
# cycle collector would scan them again at each of its full passes (a quarter of the CPU of
# a 10,000-line dry run). What exists now is kept out of the scans, and passes are rarer.
gc.freeze()
gc.set_threshold(50_000, 20, 100)

IMAGES = {entry.ref.image_id: entry.ref for entry in ENTRIES}
CACHE = SETTINGS.cache
STATUS_DIR = status_dir(CACHE)
SAVED_LIST = saved_list_path(CACHE)
ARCHIVE_RECORD = checksum_path(SETTINGS.destination)
VERIFY_LOG = "logs/verify.log"

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
    ignore_free_space=SETTINGS.ignore_free_space,
    lines={entry.ref.image_id: entry.line_numbers for entry in ENTRIES},
)


wildcard_constraints:
    image=r"[A-Za-z0-9._-]+",


def image_reference(wildcards):
    return str(IMAGES[wildcards.image])


def all_statuses(wildcards):
    return [STATUS_DIR / f"{image_id}.json" for image_id in IMAGES]


def verify_first(wildcards):
    """When the run checks the archive too, the report waits for the verdict to show it."""
    return ["save-verify.txt"] if "verify" in workflow.dag_settings.targets else []
