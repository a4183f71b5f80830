"""Float checkpoint -> bit representation, at ``--Nbits`` or at the scheme of ``--dict``.

    python convert.py -a resnet --depth 20 --model checkpoints/cifar10/resnet-20/model_best.pth.tar \
        --checkpoint checkpoints/cifar10/resnet-20-8 --Nbits 8 --act 4
"""
import os

from models import load_model
from utils.checkpoint import checkpoint_state, load_checkpoint, read_scheme, save_checkpoint
from utils.cli import DATASETS, add_bit_args, base_parser, loaders, setup
from utils.engine import evaluate
from utils.errors import BSQError, run_main
from utils.logs import scheme_report, summary


def get_args_parser():
    parser = base_parser("Convert a float model to bit representation", epochs=0, lr=0.1,
                         schedule=[], checkpoint="checkpoints/cifar10/resnet-20-8")
    add_bit_args(parser, bin_help="accepted for the release's command lines; output is always bits")
    parser.add_argument("--dict", default="", help="checkpoint whose Nbit_dict scheme to use")
    return parser


def main(args):
    device = setup(args)
    if not args.model:
        raise BSQError("convert.py needs --model: the float checkpoint to convert")
    num_classes = DATASETS[args.dataset]
    _, test_loader, _ = loaders(args, device)
    model, ckpt = load_model(args.model, args, num_classes)
    if model.form != "float":
        raise BSQError(f"--model {args.model} is already a {model.form} model: give a float one")
    nbits = args.Nbits
    if args.dict:
        nbits = read_scheme(load_checkpoint(args.dict))
        missing = [name for name, _ in model.quant_layers() if name not in (nbits or {})]
        if missing:
            raise BSQError(f"--dict {args.dict} has no scheme for layers {', '.join(missing)}: "
                           "give a bit checkpoint of the same architecture")
    model.to(device)
    before = evaluate(model, test_loader)["acc"]
    print(f"float model: test accuracy {before:.2f}%", flush=True)
    model.to_bits_(nbits)
    after = evaluate(model, test_loader)["acc"]
    print(scheme_report(model))
    print(f"bit representation: test accuracy {after:.2f}%", flush=True)
    state = checkpoint_state(model, 0, after, after, None, args)
    for name in ("checkpoint.pth.tar", "model_best.pth.tar"):
        save_checkpoint(state, os.path.join(args.checkpoint, name))
    return summary(model, after, after, os.path.join(args.checkpoint, "model_best.pth.tar"),
                   float_acc=before)


if __name__ == "__main__":
    run_main(main, get_args_parser())
