"""Every PNG chart of one or more checkpoint or sweep folders (matplotlib, an optional extra).

    python plots.py checkpoints/cifar10/xxx            # precision.png, curves.png
    python plots.py runs/sweep                         # tradeoff.png
    python plots.py checkpoints/cifar10/*              # each folder's charts

``precision.png``: each quantized layer's precision, from ``scheme.json`` (or the folder's bit
checkpoint), empty tensors hatched; ``curves.png``: test accuracy, regularizer, compression and
average bits per epoch from ``log.txt``, re-quantization epochs marked; ``tradeoff.png``: a
sweep's accuracy against compression, from ``sweep.json``.
"""
import os

from utils.cli.errors import run_main
from utils.cli.flags import Parser
from utils.errors import BSQError
from utils.report.plots import plot_folder


def get_args_parser(add_help=True):
    parser = Parser(description="PNG charts of checkpoint or sweep folders", add_help=add_help)
    parser.add_argument("folders", nargs="+", metavar="folder",
                        help="a run's --checkpoint folder, or a sweep's --out folder")
    parser.add_argument("--out", default="",
                        help="folder for the PNGs (default: each folder itself; with several "
                             "folders, a subfolder of --out named after each)")
    return parser


def main(args):
    names = [os.path.basename(os.path.abspath(folder)) for folder in args.folders]
    for folder in args.folders:
        if not os.path.isdir(folder):
            raise BSQError(f"{folder} is not a folder: give a checkpoint or sweep folder")
    if args.out and len(args.folders) > 1 and len(set(names)) < len(names):
        raise BSQError("two of the folders have the same name, so their charts would share a "
                       "folder of --out: plot them in separate calls")
    for folder, name in zip(args.folders, names):
        out = None
        if args.out:
            out = os.path.join(args.out, name) if len(args.folders) > 1 else args.out
        for path in plot_folder(folder, out):
            print(path)


if __name__ == "__main__":
    run_main(main, get_args_parser())
