"""
Several processes, one model: DistributedDataParallel.

    torchrun --nproc_per_node N train.py ...

torchrun starts N copies of train.py with WORLD_SIZE, RANK and LOCAL_RANK in their environment.
Each process holds the whole model and trains on its 1/N share of every batch (batching.Loader's
num_replicas and rank: --batch-size stays the global batch). The DDP wrapper averages the gradients
across the processes during backward(), so every copy takes the same optimizer step and the
copies never drift apart. Rank 0 is the main process: it alone writes the run folder.
gloo on CPU, nccl on GPU. Without torchrun there is one process and none of this happens.
"""

import os

import torch
import torch.distributed as dist

import classifier


def pick_device(name):
    """--device; under torchrun on GPUs, each process its own GPU."""
    device = classifier.pick_device(name)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return device


def setup(device):
    """(world size, rank): (1, 0) for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 1, 0
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    return world, dist.get_rank()


def wrap(net, world):
    """The model as the loop calls it: DDP averages its gradients across the processes."""
    return torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net


def mean(loss, world):
    """The loss of the global batch, not of this process's share (for the log)."""
    if world == 1:
        return loss
    loss = loss.detach().clone()
    dist.all_reduce(loss)
    return loss / world


def finish(world):
    """Wait for every process, then leave the group."""
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
