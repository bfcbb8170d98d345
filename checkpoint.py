"""
The checkpoint of a run in training: everything `--resume` needs to continue exactly where it
stopped, in one safetensors file beside the run (checkpoint.safetensors), written atomically at the
end of an epoch or every --checkpoint-every steps and removed when the run finishes.

    model.<name>        the model's state dict
    optim.<i>.<name>    the optimizer's state of parameter i (AdamW: step, exp_avg, exp_avg_sq)
    rng.torch           torch's random state
    header metadata     {"state": JSON}: the optimizer's param_groups and the loop's counters
                        (epoch, step, the sampler's position, the wall time so far)

A resumed run that restores all of it ends with bit-identical weights (tests/test_train.py).
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

import files

FILE = "checkpoint.safetensors"


def save(run_dir, net, opt, state: dict):
    """The model, the optimizer, torch's RNG and `state` (JSON: counters, the sampler) in one file,
    written atomically: safetensors for the tensors, the header's metadata for the rest."""
    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    opt_state = opt.state_dict()
    for i, s in opt_state["state"].items():
        for k, v in s.items():
            tensors[f"optim.{i}.{k}"] = v.contiguous().clone() if torch.is_tensor(v) else torch.tensor(v)
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"param_groups": opt_state["param_groups"], **state}
    files.atomic_write(Path(run_dir) / FILE, lambda p: save_file(tensors, p, metadata={"state": json.dumps(meta)}))


def load(run_dir, net, opt) -> dict:
    """Restore what save wrote into net and opt; returns the state dict."""
    path = Path(run_dir) / FILE
    meta = json.loads(files.read_safetensors_metadata(path).get("state", "{}"))
    tensors = files.read_safetensors(path)
    net.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    state = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    torch.set_rng_state(tensors["rng.torch"])
    return meta


def remove(run_dir):
    Path(run_dir, FILE).unlink(missing_ok=True)


def progress(run_dir) -> dict | None:
    """{"epoch": epochs done, "step": optimizer steps} of the checkpoint in run_dir (its header only), or None."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(files.read_safetensors_metadata(path).get("state", "{}"))
    except ValueError:  # a damaged checkpoint: --resume will say so
        state = {}
    return {"epoch": state.get("epoch", "?"), "step": state.get("step", "?")}
