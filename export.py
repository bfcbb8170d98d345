"""
The int8 export of a run: its model, quantised (quantize.py), written as a run folder of its own that
the report, the API and the web app read like any other. An export writes only into its own folder:
a new one, an empty one, or an earlier export of the same run, built beside it and swapped in when
complete (as `train.py --overwrite` replaces a run), so that nothing finished is lost on the way.
"""

import os
import shutil
import sys
from pathlib import Path

import model as M
import quantize
import runs


def export_target(run_dir, out_dir=None) -> Path:
    """Where an export of run_dir goes (default <run_dir>-int8), if it may: a folder that does not exist,
    an empty one, or an earlier int8 export of this very run. Anything else is a runs.RunError that says
    what the folder holds: an export writes only into its own folder."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir.resolve().with_name(run_dir.resolve().name + "-int8")
    if out_dir.resolve() == run_dir.resolve():
        raise runs.RunError(f"{out_dir}: the export must not overwrite its own source run; expected another folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise runs.RunError(f"--out {out_dir}: a file; expected a folder for the int8 model")
    held = sorted((p.name for p in out_dir.iterdir()), key=lambda n: (n.startswith("."), n)) if out_dir.is_dir() else []
    if not held:
        return out_dir
    expected = f"expected a new folder, an empty one, or an earlier int8 export of {run_dir}"
    if not (out_dir / runs.RUN_FILE).is_file():
        shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
        raise runs.RunError(f"{out_dir}: not empty and not an int8 export (holds {shown}); {expected}")
    other = runs.read_info(out_dir)
    if not other.get("quantized"):
        raise runs.RunError(f"{out_dir}: holds another run (run.json without 'quantized'); {expected}")
    source = other.get("source_run")
    if not source or Path(source).resolve() != run_dir.resolve():
        raise runs.RunError(f"{out_dir}: holds the int8 export of {source}; {expected}")
    return out_dir


def export_int8(run_dir, out_dir=None, write_card=None) -> Path:
    """
    Write run_dir's model (a LoRA run: with the adapter folded in) as a dynamically quantised int8
    model into out_dir (export_target): a run folder of its own, in quantize.py's format, that the
    report and the web app read like any other. Returns out_dir.

    The export is built beside out_dir (runs.staging_dir) and put in its place when complete, as
    `train.py --overwrite` does: an earlier export stays whole until then, whatever stops this one
    (a full disk, Ctrl-C). write_card(folder, info, summary), if given, writes the model card into
    the staged folder (info names out_dir, where it will be).
    """
    run_dir = Path(run_dir)
    info = runs.read_info(run_dir, required=("method",))
    if info.get("quantized"):
        raise runs.RunError(f"{run_dir}: already an int8 model; expected a run with fp32 weights")
    out_dir = export_target(run_dir, out_dir)
    runs.check_finished(run_dir, can_allow=False)
    net = runs.plain_model(runs.load_run(run_dir, merge=False)[0])
    staging = runs.staging_dir(out_dir)
    shutil.rmtree(staging, ignore_errors=True)  # what an export killed halfway left
    try:
        quantize.save_quantized(quantize.quantize(net), staging, tokenizer_dir=run_dir)
        results = {**info.results, "quantized": quantize.METHOD, "source_run": str(run_dir), "run_dir": str(out_dir),
                   "command": " ".join(sys.argv), "params_total": M.count_parameters(net)[0]}
        record = runs.RunInfo(info.settings, results, out_dir)
        runs.write_info(staging, record)
        summary = runs.read_summary(run_dir)  # the training cost is the source run's
        if write_card is not None:
            write_card(staging, record, summary)
        if summary is not None:
            runs.write_summary(staging, summary)  # last, as training writes it: the export is complete
        if out_dir.is_dir() and any(out_dir.iterdir()):
            runs.replace_run(staging, out_dir)
        else:
            if out_dir.is_dir():
                out_dir.rmdir()
            os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
