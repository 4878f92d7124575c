# Once per run, before any job: a finished load starts over, a killed one resumes, a changed
# archive is extracted again (see hangar/load/resume.py).
from hangar.load.resume import prepare_run
from hangar.runlock import RunLockError, hold_run_lock

if workflow.is_main_process:
    try:
        LOAD_RUN_LOCK = hold_run_lock(LOAD.cache)
    except RunLockError as error:
        raise WorkflowError(str(error)) from None
    KEPT = prepare_run(LOAD.source, LOAD.cache)
    if KEPT:
        logger.info(f"resuming: {KEPT} image(s) were loaded by the interrupted run")
