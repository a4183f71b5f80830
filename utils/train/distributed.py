"""Multi-process training with ``torchrun``: DistributedDataParallel, NCCL on GPU, gloo on CPU.

Each rank trains on its shard of every epoch with ``--train-batch`` samples per step, so the
global batch is ``world_size * --train-batch``. Every rank evaluates the whole test set, so all
ranks see the same accuracy and make the same decisions; rank 0 alone prints, logs and writes
checkpoints.
"""
import os
import sys

import torch
import torch.distributed as dist

from utils.errors import BSQError
from utils.ranks import world


def init(device_type):
    """Join the process group when started by torchrun; returns this rank's device.

    Other ranks' stdout is silenced, so the log and the final JSON line come from rank 0 alone.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return torch.device(device_type)
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend)
    if dist.get_rank() != 0:
        sys.stdout = open(os.devnull, "w")
    if device_type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def wrap(model, device):
    """``model`` in DistributedDataParallel when running under torchrun, else itself.

    Called again after every precision change: the wrapper registers the parameters it was
    built with, and re-quantization replaces them.
    """
    if world()[1] == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_reduce_(tensor):
    """Sum ``tensor`` over ranks in place (a no-op in a single process)."""
    if world()[1] > 1:
        dist.all_reduce(tensor)
    return tensor


def broadcast_(model):
    """Copy rank 0's parameters and buffers (BatchNorm statistics) to every rank."""
    if world()[1] > 1:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, 0)


def check_replicas(model):
    """Fail unless every rank holds bit-identical parameters, buffers and scheme."""
    if world()[1] == 1:
        return
    state = [t.detach().reshape(-1).double() for t in model.state_dict().values()]
    local = torch.cat(state + [torch.tensor([v for n in model.scheme().values() for v in n],
                                            dtype=torch.float64, device=state[0].device)])
    copies = [torch.empty_like(local) for _ in range(world()[1])]
    dist.all_gather(copies, local)
    if not all(torch.equal(copies[0], c) for c in copies[1:]):
        raise BSQError("the ranks' models diverged: rerun with --deterministic")
    print(f"all {world()[1]} ranks hold bit-identical models and schemes")
