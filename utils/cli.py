"""The scripts' command-line flags: the release's names, in groups, each checked as it is parsed.

Every script builds its parser from the groups it uses, so ``--help`` lists only flags that do
something there. Each value is validated by its flag's ``type`` while parsing, so a bad value
ends in one line (exit status 2) before any work is done or any folder is created; the few
rules that tie two flags together are in ``check_flags``.
"""
import argparse
import math
from typing import NamedTuple

from .arch import blocks_per_stage
from .bits import MAX_BITS
from .data import DATASETS, LOADERS
from .errors import BSQError


class Recipe(NamedTuple):
    """A training stage's schedule: epochs, lr and its milestones, ``--Prun_Int``, weight decay."""
    epochs: int
    lr: float
    schedule: tuple
    prun_int: int = 0
    wd: float = 1e-4


# The paper's ResNet-20 / CIFAR-10 recipe (README, "The recipe"): what sweep.py passes to every
# stage, and cifar_train.py's defaults.
RECIPE = {
    "train": Recipe(350, 0.1, (150, 250, 325)),
    "bsq": Recipe(350, 0.1, (250,), prun_int=100),
    "finetune": Recipe(300, 0.01, (150, 250)),
}
# The defaults of the release's own parsers (cifar_prune_STE.py, cifar_finetune.py, convert.py),
# which are those of our scripts of the same names: a flag left out means what it means there.
RELEASE_DEFAULTS = {
    "bsq": Recipe(350, 0.1, (150, 225), prun_int=50, wd=5e-4),
    "finetune": Recipe(300, 0.1, (150, 225), wd=5e-4),
    "convert": Recipe(300, 0.1, (150, 225), wd=5e-4),
}
RELEASE_SEED, RELEASE_NBITS, RELEASE_CHECKPOINT, RELEASE_DECAY = 1234, 4, "checkpoint", 0.01
# Every -a the release's parsers accept; only the CIFAR ResNet is quantized there (and here).
RELEASE_ARCHS = ("alexnet", "densenet", "preresnet", "resnet", "resnext", "vgg11", "vgg11_bn",
                 "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "wrn")
MAX_SEED = 2 ** 32 - 1


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr (exit status 2), whose help
    shows each default once, and whose flags come in titled groups."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=HelpFormatter, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def group(self, title):
        """The flag group ``title``, created on first use."""
        for group in self._action_groups:
            if group.title == title:
                return group
        return self.add_argument_group(title)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` only where there is a default worth showing."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == "" \
                or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def number(kind, lo=None, hi=None, lo_open=False, hi_open=False):
    """An argparse ``type`` parsing an int or float within bounds, or failing with the bounds."""
    if lo is not None and hi is not None and not (lo_open or hi_open):
        wanted = f"in {lo}..{hi}"
    else:
        bounds = [f"{'>' if lo_open else '>='} {lo}" if lo is not None else "",
                  f"{'<' if hi_open else '<='} {hi}" if hi is not None else ""]
        wanted = " and ".join(b for b in bounds if b)

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        below = lo is not None and (value < lo or (lo_open and value == lo))
        above = hi is not None and (value > hi or (hi_open and value == hi))
        if below or above or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not {wanted or 'finite'}")
        return value

    return parse


def arch(text):
    """``-a/--arch``: ``resnet``; the release's other architectures are named and refused."""
    if text == "resnet":
        return text
    if text in RELEASE_ARCHS:
        raise argparse.ArgumentTypeError(
            f"{text} is accepted by the release's parser, but BSQ is implemented for the CIFAR "
            "ResNet only (there too): use -a resnet")
    raise argparse.ArgumentTypeError(f"{text!r} is not an architecture: use -a resnet")


def block_name(text):
    """``--block-name``: BasicBlock in any case, as the release reads it."""
    if text.lower() == "basicblock":
        return "BasicBlock"
    if text.lower() == "bottleneck":
        raise argparse.ArgumentTypeError(
            "Bottleneck blocks have no bit representation (the release's scripts fail with "
            "them): use --block-name BasicBlock")
    raise argparse.ArgumentTypeError(f"{text!r} is not a block: use --block-name BasicBlock")


def depth(text):
    """``--depth``: 6n+2 with n >= 1."""
    value = number(int)(text)
    try:
        blocks_per_stage(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def add_training_flags(parser, recipe, checkpoint, evaluate):
    """The flags every training script takes: model, data, ``recipe``'s schedule, the run
    (output folder ``checkpoint``, ``--resume``, ``--evaluate`` with help ``evaluate``), seed,
    device, speed and progress."""
    add_model_flags(parser)
    add_data_flags(parser)
    add_schedule_flags(parser, recipe)
    add_run_flags(parser, checkpoint=checkpoint, resume=True, evaluate=evaluate)
    add_seed_flags(parser)
    add_device_flags(parser)
    add_speed_flags(parser)
    add_output_flags(parser)
    add_unused_flags(parser)


def add_model_flags(parser):
    group = parser.group("model")
    group.add_argument("-a", "--arch", type=arch, default="resnet", metavar="ARCH",
                       help="architecture: resnet, the CIFAR ResNet (the release's default, "
                            "resnet20, is not one of its choices)")
    group.add_argument("--depth", type=depth, default=20,
                       help="ResNet depth, 6n+2 (the release's default, 29, is not)")
    group.add_argument("--block-name", type=block_name, default="BasicBlock",
                       help="the ResNet's block: BasicBlock")
    group.add_argument("-d", "--dataset", default="cifar10", choices=list(DATASETS),
                       help="CIFAR-10 or CIFAR-100")
    group.add_argument("--act", type=number(int, 0, 8), default=4,
                       help="activation precision: 0 none, 1-3 PACT, 4-8 ReLU6")


def add_data_flags(parser, train=True):
    group = parser.group("data")
    group.add_argument("--data-root", default="./data",
                       help="folder holding cifar-10-batches-py/ or cifar-100-python/")
    group.add_argument("--loader", default="device", choices=LOADERS,
                       help="device: the dataset lives on the training device, augmented there, "
                            "each epoch's order from the seed and the epoch; release: the "
                            "release's DataLoader exactly (PIL transforms, the global random "
                            "order), the same batches as the release's script")
    group.add_argument("-j", "--workers", type=number(int, 0), default=4,
                       help="DataLoader worker processes (--loader release)")
    if train:
        group.add_argument("--train-batch", type=number(int, 1), default=128,
                           help="training batch size")
    group.add_argument("--test-batch", type=number(int, 1), default=100,
                       help="test batch size; accuracy depends slightly on it (the activation "
                            "range is per batch)")


def add_schedule_flags(parser, recipe):
    group = parser.group("schedule")
    group.add_argument("--epochs", type=number(int, 1), default=recipe.epochs,
                       help="number of epochs")
    group.add_argument("--start-epoch", type=number(int, 0), default=0,
                       help="first epoch (--resume sets it)")
    group.add_argument("--lr", "--learning-rate", type=number(float, 0), default=recipe.lr,
                       help="initial learning rate")
    group.add_argument("--schedule", type=number(int, 0), nargs="*", default=list(recipe.schedule),
                       help="epochs at which the learning rate is multiplied by --gamma")
    group.add_argument("--gamma", type=number(float, 0, lo_open=True), default=0.1,
                       help="learning-rate factor at each --schedule epoch")
    group.add_argument("--momentum", type=number(float, 0, 1, hi_open=True), default=0.9,
                       help="SGD momentum")
    group.add_argument("--wd", "--weight-decay", type=number(float, 0), default=recipe.wd,
                       help="SGD weight decay")


def add_run_flags(parser, checkpoint=None, resume=False, evaluate=None, model="checkpoint to "
                  "start from (ours or the release's)"):
    """``--model``; with ``checkpoint`` (its default) the output folder and ``--overwrite``;
    ``--resume``; ``-e/--evaluate`` when ``evaluate`` (its help) is given."""
    group = parser.group("run")
    group.add_argument("--model", default="", help=model)
    if checkpoint is not None:
        group.add_argument("-c", "--checkpoint", default=checkpoint,
                           help="output folder: checkpoints, log.txt, scheme.json")
        add_overwrite_flag(parser, "replace the run already in --checkpoint (without it, such a "
                                   "folder is refused)")
    if resume:
        group.add_argument("--resume", default="",
                           help="the checkpoint.pth.tar of an interrupted run to continue")
    if evaluate:
        group.add_argument("-e", "--evaluate", action="store_true", help=evaluate)


def add_overwrite_flag(parser, help):
    parser.group("run").add_argument("--overwrite", action="store_true", help=help)


def add_seed_flags(parser, seed_help=f"random seed (default: {RELEASE_SEED}, the release's; "
                                      "--resume: the run's)"):
    group = parser.group("run")
    group.add_argument("--manualSeed", type=number(int, 0, MAX_SEED), default=None,
                       help=seed_help)
    group.add_argument("--deterministic", action="store_true",
                       help="deterministic kernels: bit-identical reruns on the CPU, "
                            "deterministic cuDNN/cuBLAS kernels on CUDA")


def add_bit_flags(parser, nbits_help, bin_help=None, nbits=RELEASE_NBITS):
    group = parser.group("bits")
    group.add_argument("--Nbits", type=number(int, 1, MAX_BITS), default=nbits, help=nbits_help)
    if bin_help:
        group.add_argument("--bin", action="store_true", help=bin_help)


def add_bsq_flags(parser):
    group = parser.group("bits")
    group.add_argument("--decay", type=number(float, 0), default=RELEASE_DECAY,
                       help="alpha of Eq. 5, the regularization strength (with --L1)")
    group.add_argument("--L1", action="store_true", help="turn the bit-level group Lasso on")
    group.add_argument("--Prun_Int", type=number(int, 0), default=RELEASE_DEFAULTS["bsq"].prun_int,
                       help="epochs between re-quantizations (also before the first epoch; 0: "
                            "none during training); the model is re-quantized after the last")
    add_threshold_flag(parser)


def add_corrected_flag(parser):
    """``--corrected`` (``utils.corrections.Corrections``): None when not given, so that a
    ``--resume`` keeps the run's."""
    parser.group("run").add_argument(
        "--corrected", action="store_true", default=None,
        help="compute as the method states where the release computes otherwise (README, "
             "\"What --corrected changes\"); without it, as the release; --resume: the run's")


def add_unused_flags(parser, schedule=None):
    """The release's flags that change nothing in this script, as there: accepted, with the
    release's types and defaults, so that its command lines run. ``schedule`` (a ``Recipe``):
    also the training flags of a script that does not train (the release's convert.py); their
    values are kept as ``unused_<name>``."""
    group = parser.group("accepted for the release's command lines; unused, as in the release")
    group.add_argument("--drop", "--dropout", type=float, default=0, help="dropout (other archs)")
    for flag, default in (("--cardinality", 8), ("--widen-factor", 4), ("--growthRate", 12),
                          ("--compressionRate", 2)):
        group.add_argument(flag, type=int, default=default, help="other architectures")
    if schedule is None:
        return
    for flags, kind, default in (
            (("--epochs",), int, schedule.epochs), (("--start-epoch",), int, 0),
            (("--train-batch",), int, 128), (("--lr", "--learning-rate"), float, schedule.lr),
            (("--gamma",), float, 0.1), (("--momentum",), float, 0.9),
            (("--wd", "--weight-decay"), float, schedule.wd), (("--decay",), float, RELEASE_DECAY),
            (("--resume",), str, ""), (("--manualSeed",), int, RELEASE_SEED)):
        dest = "unused_" + flags[0].lstrip("-").replace("-", "_")
        group.add_argument(*flags, type=kind, default=default, dest=dest, help="training")
    group.add_argument("--schedule", type=int, nargs="+", default=list(schedule.schedule),
                       dest="unused_schedule", help="training")
    group.add_argument("-e", "--evaluate", action="store_true", dest="unused_evaluate",
                       help="training")


def add_threshold_flag(parser):
    parser.group("bits").add_argument(
        "--thre", type=number(float, 0, 100), default=0.0,
        help="re-quantization threshold: drop planes with at most this percentage of nonzero bits")


def add_speed_flags(parser):
    group = parser.group("speed")
    group.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                       help="replay each whole training and test step as a CUDA graph (the "
                            "eager kernels, the eager results); default: on with one GPU")
    group.add_argument("--compile", action="store_true",
                       help="torch.compile the training step's model (fused kernels: results "
                            "differ from eager within fp32 rounding)")
    group.add_argument("--amp", action="store_true",
                       help="bf16 autocast of the convolutions (quantizers, regularizer and "
                            "bit-plane arithmetic stay fp32)")
    group.add_argument("--channels-last", action="store_true",
                       help="channels-last memory format")


def add_device_flags(parser):
    parser.group("run").add_argument(
        "--gpu-id", default=None, help="set CUDA_VISIBLE_DEVICES to this (default: as it is); "
        "CUDA is used when present, else the CPU")


def add_output_flags(parser):
    parser.group("output").add_argument(
        "--progress", type=number(float, 0), default=60.0, metavar="SECONDS",
        help="when stderr is not a terminal, a progress line every SECONDS (0: none)")
    parser.group("output").add_argument(
        "--no-tensorboard", dest="tensorboard", action="store_false",
        help="write no TensorBoard event files (utils/board.py)")


def check_flags(args):
    """The rules that tie flags together; raise ``BSQError`` naming the fix."""
    if getattr(args, "start_epoch", 0) and args.start_epoch >= args.epochs:
        raise BSQError(f"--start-epoch {args.start_epoch} is not below --epochs {args.epochs}: "
                       "nothing would be trained")
