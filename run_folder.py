"""
What training may do to its run folder (--out), from the first check to the last rename. What the
folder holds, and how each file is written and read, is runs.py's business; this is its lifecycle:

  0. lock():    one process trains into a folder at a time (files.lock): from before the first
                check to after the last rename;
  1. where():   the folder the run trains in: --out itself, or, when it replaces a finished run
                (--overwrite), a hidden folder beside it, so that the old run stays whole until the
                new one is done (finish() then puts it in place with runs.replace_run);
  2. check():   before anything is loaded, refuse an --out this run must not touch: a finished run
                without --overwrite, an interrupted one without --resume or --overwrite, a file, a
                folder that is not a run's, --resume with nothing to resume or with other settings
                than the run started with;
  3. claim():   once everything is checked, the folder becomes this run's: what an earlier run of it
                left goes;
  4. discard(): a run that fails before its first checkpoint leaves no folder behind; after it, the
                folder waits for --resume, and interrupted() says so.
"""

import contextlib
import dataclasses
import os
import shutil
from pathlib import Path

import checkpoint
import files
import runs
import settings
import training_data
from settings import Settings, TrainError


def lock(run_dir: Path):
    """The folder's lock, held by the main process (under torchrun, rank 0 writes the folder alone).
    A folder that cannot be written is refused first, as check() would, so the lock has a place."""
    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    check_place(run_dir)
    return files.lock(run_dir)


def check_place(run_dir: Path):
    """--out can be a run folder: not a file, and in a folder this user can write."""
    if run_dir.is_file():
        raise TrainError(f"--out {run_dir}: a file; expected a folder for the run")
    try:
        files.check_writable(run_dir, "--out")
    except ValueError as e:
        raise TrainError(str(e)) from None


def where(s: Settings, run_dir: Path):
    """(work, existed): the folder the run trains in, and whether it was there before this run."""
    staging = runs.staging_dir(run_dir)
    replacing = runs.is_finished(run_dir) and (s.overwrite or s.resume and (staging / runs.CHECKPOINT_FILE).is_file())
    work = staging if replacing else run_dir
    # An interrupted replacement that --overwrite starts again is removed by claim(): not kept.
    return work, work.exists() and not (replacing and s.overwrite)


def check(s: Settings, run_dir: Path, work: Path):
    """Refuse, before anything is loaded, an --out that this run must not touch. work: where the run
    trains (run_dir, or beside it while it replaces a finished run). Returns, on --resume, the
    interrupted run's RunInfo, whose settings the resumed run keeps."""
    if s.resume:
        if (work / runs.CHECKPOINT_FILE).is_file():
            return check_resume(s, run_dir, work)
        if runs.is_finished(run_dir):
            raise TrainError(f"--resume {run_dir}: the run is finished (summary.json); nothing to resume. "
                             "Expected an interrupted run, or --overwrite to train it again")
        raise TrainError(f"{run_dir / runs.CHECKPOINT_FILE}: no checkpoint to resume from; run without --resume "
                         "to start afresh")
    if runs.is_finished(run_dir) and not s.overwrite:
        raise TrainError(f"--out {run_dir}: holds a finished run; expected a new folder, or --overwrite to replace it")
    unfinished = not runs.is_finished(run_dir) and ((run_dir / runs.CHECKPOINT_FILE).is_file() or (run_dir / runs.RUN_FILE).is_file())
    if unfinished and not s.overwrite:
        done = checkpoint.progress(run_dir)
        if done is None:
            raise TrainError(f"--out {run_dir}: holds an unfinished run, stopped before its first checkpoint; expected "
                             "--overwrite to start it again (--resume has nothing to continue from), or a new folder")
        epochs = runs.read_info(run_dir).get("epochs", "?") if (run_dir / runs.RUN_FILE).is_file() else "?"
        raise TrainError(f"--out {run_dir}: holds an unfinished run, stopped at step {done['step']} with {done['epoch']} of "
                         f"{epochs} epochs done; expected --resume to continue it, or --overwrite to start it again")
    check_place(run_dir)
    try:
        if s.split and not Path(s.split).exists():  # the manifest is made beside the runs unless --split says where
            files.check_writable(Path(s.split), "--split")
    except ValueError as e:
        raise TrainError(str(e)) from None
    if run_dir.is_dir() and any(run_dir.iterdir()) and not (run_dir / runs.RUN_FILE).is_file():
        raise TrainError(f"--out {run_dir}: not empty and not a run folder; expected a new or empty folder")


def check_resume(s: Settings, run_dir: Path, work: Path):
    """--resume continues the run that run.json describes: every setting that shapes it must be the same
    (settings.changed_on_resume; those marked may_change, such as --threads, may differ)."""
    try:
        before = runs.read_info(work)
    except runs.RunError as e:
        raise TrainError(f"--resume: {e}") from None
    changed = settings.changed_on_resume(before.settings, dataclasses.replace(s, split=training_data.split_path(s, run_dir)))
    if changed:
        raise TrainError(settings.resume_refusal(run_dir, changed))
    return before


def check_same_inputs(run_dir: Path, before, now: dict):
    """After loading, on --resume: the files behind the settings are those the run started on (their
    hashes in run.json): the data, the split manifest, a LoRA base, a distillation teacher."""
    what = {"data_sha256": "the data", "split_sha256": "the split manifest", "base_sha256": "the base model's weights",
            "teacher_sha256": "the teacher's weights", "ensemble_sha256": "the weights of the ensemble's other teachers"}
    for key, name in what.items():
        old = before.results.get(key)
        if old and now.get(key) and now[key] != old:
            raise TrainError(f"--resume {run_dir}: {name} changed since the run started (sha256 {now[key][:12]}…, run.json "
                             f"says {old[:12]}…); expected the same, or --overwrite to start again on the new ones")


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


def interrupted(run_dir: Path, work: Path) -> str:
    """The one line of a run stopped by Ctrl-C: what it kept, and how to go on."""
    if runs.is_finished(run_dir) and not (work / runs.CHECKPOINT_FILE).is_file():
        return f"interrupted while finishing; {run_dir} is complete"
    done = checkpoint.progress(work)
    kept = f"; the finished run in {run_dir} is unchanged" if work != run_dir and runs.is_finished(run_dir) else ""
    if done is None:
        return f"interrupted before the first checkpoint: nothing kept{kept}"
    try:
        epochs = runs.read_info(work).get("epochs", "?")
    except runs.RunError:
        epochs = "?"
    return (f"interrupted; kept the checkpoint at step {done['step']} ({done['epoch']} of {epochs} epochs done){kept}: "
            "the same command with --resume continues from it")
