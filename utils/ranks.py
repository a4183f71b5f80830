"""This process's place among torchrun's ranks: imports nothing of the project, so that every
module may ask whether it is the one that prints and writes (``utils/train/distributed.py`` runs
the process group)."""
import torch.distributed as dist


def world():
    """``(rank, world_size)``: (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main():
    """Whether this process is rank 0 (or the only one): the one that prints and writes."""
    return world()[0] == 0
