# Parsing and input functions shared by the load rules: definitions only, no side effects.
from hangar.layout import status_dir
from hangar.load.extract import marker_path
from hangar.load.items import SavedListError, read_saved_list
from hangar.load.resume import summary_path
from hangar.load.settings import LoadSettings
from hangar.settings import ConfigError

try:
    LOAD = LoadSettings.from_config(config)
except ConfigError as error:
    raise WorkflowError(f"{error}") from None

LOAD_STATUS_DIR = status_dir(LOAD.cache)
EXTRACTED = marker_path(LOAD.cache)
LOAD_SUMMARY = summary_path(LOAD.cache)
_ITEMS = {}


wildcard_constraints:
    item=r"[A-Za-z0-9._-]+",


def load_items():
    """The images and artifacts of the saved list, by id (read once, after the extraction)."""
    if not _ITEMS:
        try:
            _ITEMS.update({item.item_id: item for item in read_saved_list(LOAD.root)})
        except (OSError, SavedListError) as error:
            raise WorkflowError(f"{error}") from None
    return _ITEMS


def all_load_statuses(wildcards):
    checkpoints.extract.get()
    return [LOAD_STATUS_DIR / f"{item_id}.json" for item_id in load_items()]


def item_line(wildcards):
    return load_items()[wildcards.item].line
