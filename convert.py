"""Float checkpoint -> bit representation, at ``--Nbits`` or at the scheme of ``--dict``.

    python convert.py -a resnet --depth 20 \
        --model checkpoints/cifar10/resnet-20/model_best.pth.tar \
        --checkpoint checkpoints/cifar10/resnet-20-8 --Nbits 8 --act 4

As in the release: a float checkpoint that records a scheme (``best_float.pth.tar``) is
converted at it unless ``--dict`` gives another; a ReLU6 model converted with ``--act 1..3``
becomes a PACT model with every alpha at its initial value; the file records epoch 1.
"""
import os

from models import load_model, model_config, model_flags
from utils.cli.errors import run_main
from utils.cli.flags import (
    Parser,
    add_bit_flags,
    add_corrected_flag,
    add_data_flags,
    add_device_flags,
    add_run_flags,
)
from utils.cli.release import RELEASE_CHECKPOINT, RELEASE_DEFAULTS, add_unused_flags
from utils.cli.setup import prepare
from utils.data import image_shapes
from utils.errors import BSQError
from utils.report.console import summary
from utils.report.scheme import scheme_report
from utils.store.checkpoint import checkpoint_state, load_checkpoint, read_scheme, save_checkpoint
from utils.store.rundir import interrupted, open_run
from utils.train.engine import evaluate


def get_args_parser(add_help=True):
    parser = Parser(description="Convert a float model to bit representation", add_help=add_help)
    parser.add_flags("model", model_flags())
    add_data_flags(parser, train=False)
    add_run_flags(parser, checkpoint=RELEASE_CHECKPOINT,
                  model="the float checkpoint to convert (ours or the release's)")
    add_bit_flags(parser, nbits_help="precision of every quantized layer (without --dict, and "
                                     "when --model records no scheme)")
    parser.group("bits").add_argument("--dict", default="",
                                      help="a bit checkpoint whose scheme (Nbit_dict) to use")
    add_corrected_flag(parser)
    add_device_flags(parser)
    add_unused_flags(parser, RELEASE_DEFAULTS["convert"])
    return parser


def main(args):
    if not args.model:
        raise BSQError("convert.py needs --model: the float checkpoint to convert")
    config = model_config(args)
    run = prepare(args)
    model, ckpt = load_model(args.model, partial=True, inputs=image_shapes(args), **config)
    if model.form != "float":
        raise BSQError(f"--model {args.model} is already a {model.form} model: give a float one")
    nbits = read_scheme(ckpt) or args.Nbits  # as in the release: a float model's own scheme
    if args.dict:
        nbits = read_scheme(load_checkpoint(args.dict))
        missing = [name for name, _ in model.quant_layers() if name not in (nbits or {})]
        if missing:
            raise BSQError(f"--dict {args.dict} has no scheme for layers {', '.join(missing)}: "
                           "give a bit checkpoint of the same architecture")
    model.to(run.device)
    before = evaluate(model, run.test_loader)["acc"]
    print(f"float model: test accuracy {before:.2f}%")
    model.to_bits_(nbits)
    after = evaluate(model, run.test_loader)["acc"]
    print(scheme_report(model))
    print(f"bit representation: test accuracy {after:.2f}%")
    state = checkpoint_state(model, epoch=1, acc=after, best_acc=after, args=args)
    with open_run(args):
        for name in ("checkpoint.pth.tar", "model_best.pth.tar"):
            save_checkpoint(state, os.path.join(args.checkpoint, name))
    return summary(model, after, after, os.path.join(args.checkpoint, "model_best.pth.tar"),
                   float_acc=before)


if __name__ == "__main__":
    run_main(main, get_args_parser(), interrupted=interrupted)
