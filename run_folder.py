"""
What training may do to its run folder (--out), from the first check to the last rename. What the
folder holds, and how each file is written and read, is runs.py's business; this is its lifecycle:

  1. where():   the folder the run trains in: --out itself, or, when it replaces a finished run
                (--overwrite), a hidden folder beside it, so that the old run stays whole until the
                new one is done (finish() then puts it in place with runs.replace_run);
  2. check():   before anything is loaded, refuse an --out this run must not touch: a finished run
                without --overwrite, a file, a folder that is not a run's, --resume with nothing to
                resume;
  3. claim():   once everything is checked, the folder becomes this run's: what an earlier run of it
                left goes;
  4. discard(): a run that fails before its first checkpoint leaves no folder behind; after it, the
                folder waits for --resume.
"""

import shutil
from pathlib import Path

import files
import runs
from settings import Settings, TrainError


def where(s: Settings, run_dir: Path):
    """(work, existed): the folder the run trains in, and whether it was there before this run."""
    staging = runs.staging_dir(run_dir)
    replacing = runs.is_finished(run_dir) and (s.overwrite or s.resume and (staging / runs.CHECKPOINT_FILE).is_file())
    work = staging if replacing else run_dir
    # An interrupted replacement that --overwrite starts again is removed by claim(): not kept.
    return work, work.exists() and not (replacing and s.overwrite)


def check(s: Settings, run_dir: Path, work: Path):
    """Refuse, before anything is loaded, an --out that this run must not touch. work: where the run
    trains (run_dir, or beside it while it replaces a finished run)."""
    if s.resume:
        if (work / runs.CHECKPOINT_FILE).is_file():
            return
        if runs.is_finished(run_dir):
            raise TrainError(f"--resume {run_dir}: the run is finished (summary.json); nothing to resume. "
                             "Expected an interrupted run, or --overwrite to train it again")
        raise TrainError(f"{run_dir / runs.CHECKPOINT_FILE}: no checkpoint to resume from; run without --resume "
                         "to start afresh")
    if runs.is_finished(run_dir) and not s.overwrite:
        raise TrainError(f"--out {run_dir}: holds a finished run; expected a new folder, or --overwrite to replace it")
    if run_dir.is_file():
        raise TrainError(f"--out {run_dir}: a file; expected a folder for the run")
    try:
        files.check_writable(run_dir, "--out")
        if s.split and not Path(s.split).exists():  # the manifest is made beside the runs unless --split says where
            files.check_writable(Path(s.split), "--split")
    except ValueError as e:
        raise TrainError(str(e)) from None
    if run_dir.is_dir() and any(run_dir.iterdir()) and not (run_dir / runs.RUN_FILE).is_file():
        raise TrainError(f"--out {run_dir}: not empty and not a run folder; expected a new or empty folder")


def claim(run_dir: Path, work: Path):
    """A fresh start in work: what an earlier run of this folder left goes (only once all is checked)."""
    if work != run_dir:
        shutil.rmtree(work, ignore_errors=True)  # what an earlier, interrupted replacement left
    work.mkdir(parents=True, exist_ok=True)
    runs.remove_files(work, (*runs.MODEL_FILES, runs.LOG_FILE, runs.SUMMARY_FILE, runs.CHECKPOINT_FILE, runs.CARD_FILE))
    shutil.rmtree(work / "merged", ignore_errors=True)
    runs.remove_stale_temporaries(work)


def discard(work: Path, existed: bool):
    """After a failure: a folder this run made and never checkpointed goes."""
    if not existed and work.is_dir() and not (work / runs.CHECKPOINT_FILE).exists():
        shutil.rmtree(work, ignore_errors=True)
