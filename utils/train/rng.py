"""The random generators' state, saved in every checkpoint so that a resumed run draws the same
numbers as an uninterrupted one.

Only torch's generators are drawn from (initialisation, dropout-free training steps, the
torchvision loader's augmentation); each epoch's order and the device loader's augmentation
come from their own generator seeded by ``--manualSeed`` and the epoch (``utils/data/cifar.py``).
"""
import torch


def rng_state():
    """torch's CPU generator state, and every CUDA device's when CUDA is present."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore the generators saved by ``rng_state`` (other keys, from older files, are unused)."""
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
