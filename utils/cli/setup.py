"""What every script does before its work: device, seed, determinism, torchrun, data, and the
checks that tie the flags to the device and to the checkpoint given."""
import os
import random
import warnings
from typing import NamedTuple

import torch

from utils.cli.flags import check_flags
from utils.cli.release import RELEASE_SEED
from utils.data import Crops, build_loaders
from utils.errors import BSQError
from utils.ranks import world
from utils.store.rundir import check_run
from utils.train import distributed
from utils.train.engine import Speed

KEPT_ON_RESUME = {"manualSeed": RELEASE_SEED, "corrected": False}  # flag -> default when new


class Run(NamedTuple):
    """What a script has once its flags are checked: the device, the speed settings, the two
    loaders, and the ``--resume`` checkpoint (loaded and checked) or None."""
    device: torch.device
    speed: Speed
    train_loader: object
    test_loader: object
    resume: object


def prepare(args, writes=True):
    """Everything before a script's work, in an order that fails early: the rules between flags,
    the output folder and a ``--resume`` (checked, nothing written; ``writes``), the seed and the
    device, the speed settings, the data."""
    check_flags(args)
    resume = check_run(args) if writes else None
    device = setup(args, resume)
    return Run(device, speed(args, device), *loaders(args, device), resume)


def setup(args, resume=None):
    """Seed the generators, pick the device (joining torchrun); returns it.

    A flag left out whose value a ``--resume`` keeps (``KEPT_ON_RESUME``) becomes the resumed
    run's (``resume``, its loaded checkpoint), else its default: so ``args.manualSeed`` is the
    seed used (the release's 1234 by default), and checkpoints record it. ``random`` and torch
    are seeded from it, as in the release.
    """
    if args.gpu_id is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpu_id
    recorded = (resume or {}).get("args") or {}
    for dest, default in KEPT_ON_RESUME.items():
        if getattr(args, dest, default) is None:
            setattr(args, dest, default if recorded.get(dest) is None else recorded[dest])
    if hasattr(args, "manualSeed"):
        random.seed(args.manualSeed)
        torch.manual_seed(args.manualSeed)
    if getattr(args, "deterministic", False):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return distributed.init("cuda" if torch.cuda.is_available() else "cpu")


def speed(args, device):
    """The run's ``Speed``: CUDA graphs by default on a single GPU (``--no-cuda-graphs`` turns
    them off), the other flags as given."""
    if not hasattr(args, "cuda_graphs"):  # a script without speed flags: it only evaluates
        return Speed()
    one_gpu = device.type == "cuda" and world()[1] == 1
    if args.cuda_graphs and not one_gpu:
        raise BSQError(f"--cuda-graphs needs a single CUDA GPU, and this run has "
                       f"{world()[1]} {device.type} process(es): drop the flag")
    graphs = one_gpu if args.cuda_graphs is None else args.cuda_graphs
    return Speed(args.amp, args.channels_last, args.compile, graphs)


def loaders(args, device):
    """The train and test loaders the flags describe, on ``device``.

    ``-j`` is taken as given, also above the machine's cores (the release's default 4 included:
    the workers' seeds set the batches of ``--loader release``), without torch's two-line
    warning about it at every epoch."""
    warnings.filterwarnings("ignore", message=r"This DataLoader will create \d+ worker")
    rank, world_size = world()
    return build_loaders(args.dataset, args.data_root, getattr(args, "train_batch", 1),
                         args.test_batch, device, args.loader, args.workers,
                         getattr(args, "manualSeed", 0), rank, world_size,
                         crops=Crops.from_args(args))


RESUMED_BY = {"float": ("a float model's", "cifar_train.py"),
              "bits": ("a bit-representation (BSQ) run's", "cifar_prune_STE.py"),
              "finetune": ("a finetune run's", "cifar_finetune.py")}


def check_resumed_form(model, args, form):
    """A ``--resume`` checkpoint holds the form this script trains (``form``)."""
    if getattr(args, "resume", "") and model.form != form:
        whose, script = RESUMED_BY[model.form]
        raise BSQError(f"--resume {args.resume} is {whose} checkpoint: resume it with {script}, "
                       "or start from it with --model")


def check_form(model, args, path):
    """``--bin`` says ``path`` holds a bit-representation model (bits or finetune form), its
    absence a float one, as in the release."""
    if args.bin and model.form == "float":
        raise BSQError(f"{path} is a float model but --bin was given: drop --bin")
    if not args.bin and model.form != "float":
        raise BSQError(f"{path} is a bit-representation model: add --bin")
