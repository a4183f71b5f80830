"""Command-line flags shared by the scripts (the release's names), validation and run setup."""
import argparse
import os
import random

import torch

from . import distributed
from .checkpoint import load_checkpoint
from .data import build_loaders
from .errors import BSQError

DATASETS = {"cifar10": 10, "cifar100": 100}


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr (exit status 2)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def base_parser(description, epochs, lr, schedule, checkpoint):
    """The release's flags, with each script's own defaults, plus ``--data-root``/``--loader``."""
    parser = Parser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("-a", "--arch", default="resnet", choices=["resnet"], help="model architecture")
    add("--depth", type=int, default=20, help="ResNet depth, 6n+2")
    add("-d", "--dataset", default="cifar10", choices=list(DATASETS))
    add("--data-root", default="./data", help="folder holding cifar-10-batches-py/ or cifar-100-python/")
    add("--loader", default="device", choices=["device", "torchvision"],
        help="device: the dataset lives on the training device, augmented there; "
             "torchvision: DataLoader with PIL transforms, the release's data path")
    add("-j", "--workers", type=int, default=4, help="DataLoader workers (--loader torchvision)")
    add("--epochs", type=int, default=epochs)
    add("--start-epoch", type=int, default=0, help="epoch to start at (set by --resume)")
    add("--train-batch", type=int, default=128)
    add("--test-batch", type=int, default=100)
    add("--lr", "--learning-rate", type=float, default=lr)
    add("--schedule", type=int, nargs="*", default=schedule, help="epochs at which lr *= gamma")
    add("--gamma", type=float, default=0.1)
    add("--momentum", type=float, default=0.9)
    add("--wd", "--weight-decay", type=float, default=1e-4)
    add("-c", "--checkpoint", default=checkpoint, help="folder for checkpoints and log.txt")
    add("--resume", default="", help="checkpoint.pth.tar of an interrupted run to continue")
    add("--model", default="", help="checkpoint to start from")
    add("--manualSeed", type=int, default=None,
        help="random seed (random when not given; --resume reuses the interrupted run's)")
    add("--deterministic", action="store_true",
        help="deterministic kernels: bit-identical reruns on the CPU, deterministic CUDA kernels")
    add("-e", "--evaluate", action="store_true", help="only evaluate --model")
    add("--gpu-id", default=None, help="set CUDA_VISIBLE_DEVICES (default: leave it as it is)")
    add("--act", type=int, default=4, help="activation precision: 0 none, 1-3 PACT, >= 4 ReLU6")
    add("--amp", action="store_true", help="bf16 autocast for the convolutions (quantizers, "
        "regularizer and bit-plane arithmetic stay fp32); meant for CUDA")
    add("--channels-last", action="store_true", help="channels-last memory format")
    add("--compile", action="store_true", help="torch.compile the training step's model "
        "(recompiled after each precision change)")
    add("--cuda-graphs", action="store_true", help="on one GPU, replay each whole training and "
        "test step as one CUDA graph (the eager kernels, so the eager results; not yet measured)")
    return parser


def add_bit_args(parser, bin_help):
    """``--Nbits`` and ``--bin``, the release's bit-representation flags."""
    parser.add_argument("--Nbits", type=int, default=8, help="weight precision, 1..8")
    parser.add_argument("--bin", action="store_true", help=bin_help)


def check_args(args):
    """Reject values the method has no meaning for, with the fix in the message."""
    if args.depth < 8 or (args.depth - 2) % 6:
        raise BSQError(f"--depth {args.depth} is not 6n+2: use 20, 32, 44, 56 or 110")
    if not 0 <= args.act <= 8:
        raise BSQError(f"--act {args.act} is outside 0..8")
    if not 1 <= getattr(args, "Nbits", 8) <= 8:
        raise BSQError(f"--Nbits {args.Nbits} is outside 1..8")
    for flag in ("lr", "decay", "wd", "thre"):
        if getattr(args, flag, 0) < 0:
            raise BSQError(f"--{flag} {getattr(args, flag)} is negative")
    if getattr(args, "Prun_Int", 1) < 1:
        raise BSQError(f"--Prun_Int {args.Prun_Int} must be at least 1")
    if args.epochs < 0 or args.train_batch < 1 or args.test_batch < 1:
        raise BSQError("--epochs, --train-batch and --test-batch must be positive")


def setup(args, needs_folder=True):
    """Seed everything, pick the device, create ``--checkpoint``; returns the device."""
    if args.gpu_id is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpu_id
    check_args(args)
    if args.manualSeed is None and args.resume:
        args.manualSeed = (load_checkpoint(args.resume).get("args") or {}).get("manualSeed")
    if args.manualSeed is None:
        args.manualSeed = random.randint(1, 10000)
    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    random.seed(args.manualSeed)
    torch.manual_seed(args.manualSeed)
    if needs_folder:
        try:
            os.makedirs(args.checkpoint, exist_ok=True)
        except OSError as e:
            raise BSQError(f"--checkpoint {args.checkpoint} cannot be created ({e.strerror}): "
                           "pick a writable folder") from None
        if not os.access(args.checkpoint, os.W_OK):
            raise BSQError(f"--checkpoint {args.checkpoint} is not writable: pick a writable folder")
    device = distributed.init("cuda" if torch.cuda.is_available() else "cpu")
    processes = distributed.world()[1]
    if args.cuda_graphs and (device.type != "cuda" or processes > 1):
        raise BSQError(f"--cuda-graphs needs a single CUDA GPU, and this run has {processes} "
                       f"{device.type} process(es): drop the flag")
    return device


def loaders(args, device):
    """The train and test loaders the flags describe, on ``device``."""
    rank, world_size = distributed.world()
    return build_loaders(args.dataset, args.data_root, args.train_batch, args.test_batch, device,
                         args.loader, args.workers, args.manualSeed, rank, world_size)
