"""Every PNG chart of a checkpoint or sweep folder (matplotlib, an optional extra).

    python plots.py checkpoints/cifar10/xxx            # precision.png, curves.png
    python plots.py runs/sweep                         # tradeoff.png

``precision.png``: each quantized layer's precision, from ``scheme.json`` (or the folder's bit
checkpoint); ``curves.png``: test accuracy, regularizer, compression and average bits per epoch
from ``log.txt``, re-quantization epochs marked; ``tradeoff.png``: a sweep's accuracy against
compression, from ``sweep.json``.
"""

from utils.cli.errors import run_main
from utils.cli.flags import Parser
from utils.report.plots import plot_folder


def get_args_parser(add_help=True):
    parser = Parser(description="PNG charts of a checkpoint or sweep folder", add_help=add_help)
    parser.add_argument("folder", help="a run's --checkpoint folder, or a sweep's --out folder")
    parser.add_argument("--out", default="", help="folder for the PNGs (default: the folder)")
    return parser


def main(args):
    for path in plot_folder(args.folder, args.out or None):
        print(path)


if __name__ == "__main__":
    run_main(main, get_args_parser())
