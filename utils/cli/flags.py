"""The scripts' command-line flags: the release's names, in groups, each checked as it is parsed.

Every script builds its parser from the groups it uses, so ``--help`` lists only flags that do
something there. Each value is validated by its flag's ``type`` while parsing, so a bad value
ends in one line (exit status 2) before any work is done or any folder is created; the few
rules that tie two flags together are in ``check_flags``.
"""
import argparse
import difflib
import math
from dataclasses import dataclass
from typing import Optional

from utils.cli.release import RELEASE_DECAY, RELEASE_DEFAULTS, RELEASE_NBITS, RELEASE_SEED
from utils.data import DATASET_NAMES, LOADERS
from utils.errors import BSQError
from utils.names import option
from utils.quant.bits import MAX_BITS

MAX_SEED = 2 ** 32 - 1
TRAIN_BATCH = 128  # the release's, per process


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr (exit status 2), whose help
    shows each default once, and whose flags come in titled groups. A flag it does not know
    gets the closest one it does: ``--Prun-Int: did you mean --Prun_Int?``."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=HelpFormatter, **kwargs)

    def parse_args(self, args=None, namespace=None):
        args, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}{self._suggestion(unknown)}")
        return args

    def _suggestion(self, unknown):
        """``: did you mean --X?`` for the first unknown flag close to one of the parser's."""
        known = [s for s in self._option_string_actions if s.startswith("--")]
        for word in unknown:
            flag = word.split("=", 1)[0]
            if flag.startswith("--"):
                close = difflib.get_close_matches(flag, known, n=1, cutoff=0.7)
                if close:
                    return f": did you mean {close[0]}?"
        return ""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def group(self, title):
        """The flag group ``title``, created on first use."""
        for group in self._action_groups:
            if group.title == title:
                return group
        return self.add_argument_group(title)

    def add_flags(self, title, flags):
        """Each ``Flag`` of ``flags`` in the group ``title``."""
        group = self.group(title)
        for flag in flags:
            group.add_argument(*flag.options, dest=flag.dest, type=flag.parser(),
                               choices=flag.choices, default=flag.default, help=flag.help)

    def dests(self, titles=None):
        """The ``dest`` of each flag, of the groups ``titles`` only when given."""
        groups = [g for g in self._action_groups if titles is None or g.title in titles]
        return [a.dest for g in groups for a in g._group_actions if a.dest != "help"]

    def spell(self, args, dests):
        """The command line that gives the values ``args`` holds for ``dests``, as this parser
        reads them: ``["-a", "resnet", "--depth", "20", "--no-tensorboard"]``. A None value, an
        unset switch and a switch left at its default are left out."""
        actions = {a.dest: a for a in self._actions}
        words = []
        for dest in dests:
            action, value = actions[dest], getattr(args, dest)
            if value is None:
                continue
            if isinstance(action, argparse.BooleanOptionalAction):
                words.append(action.option_strings[0 if value else 1])
            elif action.nargs == 0:
                words += [action.option_strings[0]] if value != action.default else []
            elif isinstance(value, (list, tuple)):
                words += [action.option_strings[0], *map(str, value)]
            else:
                words += [action.option_strings[0], str(value)]
        return words


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` only where there is a default worth showing: not for a flag
    without a value (``--no-tensorboard``'s default True would read as "off by default")."""

    def _get_help_string(self, action):
        if action.default is None or action.default == "" or action.nargs == 0 \
                or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


@dataclass(frozen=True)
class Flag:
    """A flag declared as data by what reads it (a network declares its own: ``models/registry``):
    its ``dest``, spelled ``option(dest)`` on the command line unless ``names`` are given; the
    ``kind`` of its value (int, float or str) within ``lo`` .. ``hi`` (``hi_open``: below ``hi``)
    or among ``choices``; the reader's ``default``; and what it means there (``help``)."""
    dest: str
    kind: type = int
    default: object = None
    help: str = ""
    lo: Optional[float] = None
    hi: Optional[float] = None
    hi_open: bool = False
    choices: Optional[tuple] = None
    names: tuple = ()

    @property
    def options(self):
        return self.names or (option(self.dest),)

    def parser(self):
        """The argparse ``type`` of its values (None for text)."""
        return None if self.kind is str else number(self.kind, self.lo, self.hi,
                                                     hi_open=self.hi_open)

    def parses_like(self, other):
        """Whether ``other`` reads values as this flag does (kind, bounds, choices)."""
        return all(getattr(self, k) == getattr(other, k)
                   for k in ("kind", "lo", "hi", "hi_open", "choices"))


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


def add_training_flags(parser, recipe, checkpoint, evaluate):
    """The flags every training script takes besides the model's (``models.model_flags``):
    data, ``recipe``'s schedule, the run (output folder ``checkpoint``, ``--resume``,
    ``--evaluate`` with help ``evaluate``), seed, device, speed and progress."""
    add_data_flags(parser)
    add_schedule_flags(parser, recipe)
    add_run_flags(parser, checkpoint=checkpoint, resume=True, evaluate=evaluate)
    add_seed_flags(parser)
    add_device_flags(parser)
    add_speed_flags(parser)
    add_output_flags(parser)


def add_data_flags(parser, train=True):
    group = parser.group("data")
    group.add_argument("-d", "--dataset", default="cifar10", choices=list(DATASET_NAMES),
                       help="CIFAR-10, CIFAR-100, or ImageNet (an ImageFolder tree)")
    group.add_argument("--data-root", default="./data",
                       help="folder holding cifar-10-batches-py/ or cifar-100-python/; for -d "
                            "imagenet train/<class>/*.JPEG and val/<class>/*.JPEG")
    group.add_argument("--loader", default="device", choices=LOADERS,
                       help="device: the dataset lives on the training device, augmented there, "
                            "each epoch's order from the seed and the epoch; release: the "
                            "release's DataLoader exactly (PIL transforms, the global random "
                            "order), the same batches as the release's script")
    group.add_argument("-j", "--workers", type=number(int, 0), default=4,
                       help="DataLoader worker processes (--loader release, -d imagenet)")
    group.add_argument("--train-crop-size", type=number(int, 1), default=None,
                       help="-d imagenet: side of the training images' random resized crop "
                            "(default: the network's input size, 224; inception_v3: 299)")
    group.add_argument("--val-resize-size", type=number(int, 1), default=None,
                       help="-d imagenet: the test images' shorter side before the center crop "
                            "(default: round(val crop * 256 / 224), 256; inception_v3: 342)")
    group.add_argument("--val-crop-size", type=number(int, 1), default=None,
                       help="-d imagenet: side of the test images' center crop (default: the "
                            "network's input size, 224; inception_v3: 299)")
    if train:
        group.add_argument("--train-batch", type=number(int, 1), default=TRAIN_BATCH,
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
    group.add_argument("--decay", type=number(float, 0), default=None,
                       help=f"alpha of Eq. 5, the regularization strength (with --L1; default "
                            f"{RELEASE_DECAY}, the release's, unless a --target-* sets it)")
    group.add_argument("--L1", action="store_true", help="turn the bit-level group Lasso on")
    group.add_argument("--Prun_Int", type=number(int, 0), default=RELEASE_DEFAULTS["bsq"].prun_int,
                       help="epochs between re-quantizations (also before the first epoch; 0: "
                            "none during training); the model is re-quantized after the last")
    add_threshold_flag(parser)
    group = parser.group("budget")
    group.add_argument("--target-bits", type=number(float, 0, MAX_BITS, lo_open=True),
                       default=None, help="end at this average weight precision (TB/TP), alpha "
                       "adjusted during training in place of --decay")
    group.add_argument("--target-compression", type=number(float, 1, lo_open=True), default=None,
                       help="end at this compression 32 TP/TB (the same as --target-bits 32/X)")
    group.add_argument("--target-bops", type=number(float, 0, lo_open=True), default=None,
                       metavar="GBOPS", help="end at this many billion bit-operations per image "
                       "(MACs x weight bits x activation bits, every conv and linear)")
    group.add_argument("--allowed-bits", type=number(int, 1, MAX_BITS), nargs="+", default=None,
                       metavar="N", help="the precisions a layer may have (e.g. 4 8): each "
                       "re-quantization rounds a precision up to one of them")


def add_corrected_flag(parser):
    """``--corrected`` (``utils.quant.corrections.Corrections``): None when not given, so that a
    ``--resume`` keeps the run's."""
    parser.group("run").add_argument(
        "--corrected", action="store_true", default=None,
        help="compute as the method states where the release computes otherwise (README, "
             "\"What --corrected changes\"); without it, as the release; --resume: the run's")


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
        help="write no TensorBoard event files (without it they are written into --checkpoint; "
             "utils/report/board.py)")


def check_flags(args):
    """The rules that tie flags together; raise ``BSQError`` naming the fix."""
    if getattr(args, "start_epoch", 0) and args.start_epoch >= args.epochs:
        raise BSQError(f"--start-epoch {args.start_epoch} is not below --epochs {args.epochs}: "
                       "nothing would be trained")
