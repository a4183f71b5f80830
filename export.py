"""Write a BSQ model at its true size (``utils/store/packedfile.py``'s packed format), or read one;
or write it as an ONNX graph that ONNX Runtime executes (``models/onnx.py``).

    python export.py -a resnet --depth 20 --model checkpoints/cifar10/xxx-ft/best_bin.pth.tar \
        --act 4 --export checkpoints/cifar10/xxx-ft/model.bsq [--evaluate]
    python export.py --load checkpoints/cifar10/xxx-ft/model.bsq --evaluate
    python export.py -a resnet --depth 20 --model checkpoints/cifar10/xxx-ft/best_bin.pth.tar \
        --act 4 --onnx checkpoints/cifar10/xxx-ft/model.onnx [--evaluate]

Exporting rebuilds the model from the written file and checks that every weight the forward pass
uses is identical; ``--evaluate`` also runs both on the test set. The sizes printed are the
paper's (TB bits / 8, no sign bits or float layers), the file's real size, and the ratio of
the unquantized fp32 model's tensor bytes to each. ``--onnx --evaluate`` runs the test set
through ONNX Runtime and through the checkpoint and prints both accuracies, how often their
predictions agree and the largest logit difference.
"""
import math
import os
from functools import partial

from models import input_defaults, load_model, model_config, model_flags
from models.onnx import compare, graph_sizes, logits, session
from models.packed import pack, same_weights, sizes, unpack
from utils.cli.errors import run_main
from utils.cli.flags import (
    Parser,
    add_data_flags,
    add_device_flags,
    add_overwrite_flag,
    add_run_flags,
)
from utils.cli.setup import loaders, setup
from utils.data import input_shape, num_classes
from utils.errors import BSQError
from utils.quant.bits import FLOAT_BITS
from utils.report.console import summary, times
from utils.store.files import atomic_write
from utils.store.rundir import check_writable
from utils.train.engine import evaluate


def get_args_parser(add_help=True):
    parser = Parser(description="Export a BSQ model as packed integers, or evaluate a packed file",
                    add_help=add_help)
    parser.add_flags("model", model_flags())
    add_data_flags(parser, train=False)
    add_run_flags(parser, model="the bit or finetune checkpoint to pack (with --export)",
                  evaluate="also evaluate the packed model (and --model) on the test set")
    group = parser.group("packed file")
    group.add_argument("--export", default="", metavar="FILE",
                       help="write --model to this packed file")
    group.add_argument("--load", default="", metavar="FILE",
                       help="rebuild the model from this packed file instead")
    group.add_argument("--onnx", default="", metavar="FILE",
                       help="write --model as an ONNX graph with integer weights instead")
    add_overwrite_flag(parser, "replace an existing --export or --onnx FILE")
    add_device_flags(parser)
    return parser


def size_lines(size, path):
    """The human-readable size report of a packed file."""
    comp = times(FLOAT_BITS * size["TP"] / size["TB"] if size["TB"] else math.inf)
    return "\n".join([
        f"packed model {path}",
        f"  paper size, TB/8       {size['paper']:>12.0f} bytes  (TB {size['TB']} bits for TP "
        f"{size['TP']} weights, 32 TP/TB = {comp})",
        f"  quantized tensors      {size['quantized']:>12} bytes  (scales, sign bits, magnitudes)",
        f"  float tensors          {size['float']:>12} bytes  (BatchNorm, shortcut convs, PACT)",
        f"  header                 {size['header']:>12} bytes",
        f"  file                   {size['file']:>12} bytes",
        f"  fp32 model             {size['fp32']:>12} bytes  = {size['fp32'] / size['file']:.2f}x "
        "the file"])


def check_output(flag, path, overwrite):
    """Before any work: ``path`` can be written (and replaced only with ``--overwrite``)."""
    if os.path.exists(path) and not overwrite:
        raise BSQError(f"{flag} {path} already exists: pass --overwrite to replace it, "
                       "or pick another file")
    check_writable(os.path.dirname(os.path.abspath(path)), f"{flag} {path}")


def load_bit_model(args, flag):
    """The bit or finetune model of ``--model``, and its checkpoint."""
    if not args.model:
        raise BSQError(f"{flag} needs --model: the bit or finetune checkpoint to write")
    model, ckpt = load_model(args.model, **model_config(args))
    if model.form == "float":
        raise BSQError(f"--model {args.model} is a float model: convert it to bits first "
                       "(convert.py) or give a BSQ / finetune checkpoint")
    return model, ckpt


def onnx_main(args, device):
    """``--onnx``: write the graph, report its size, with ``--evaluate`` compare it with the
    checkpoint on the test set."""
    model, _ = load_bit_model(args, "--onnx")
    model.eval()
    data, float_bytes, paper = graph_sizes(model, input_shape(args))
    os.makedirs(os.path.dirname(os.path.abspath(args.onnx)), exist_ok=True)
    atomic_write(args.onnx, data)
    print(f"onnx model {args.onnx}: {len(data)} bytes, {float_bytes / len(data):.2f}x smaller "
          f"than with float32 weights ({float_bytes} bytes); paper size TB/8 {paper:.0f} bytes")
    result = {}
    if args.evaluate:
        _, test_loader = loaders(args, device)
        result = compare(model.to(device), partial(logits, session(data)), test_loader)
        print(f"ONNX Runtime: test accuracy {result['other_acc']:.2f}%, checkpoint "
              f"{args.model}: {result['acc']:.2f}%; the predicted class agrees on "
              f"{result['agree']:.2f}% of the test images; largest logit difference "
              f"{result['max_logit_diff']:.3g}")
    acc = result.pop("other_acc", None)
    return summary(model, acc, acc, args.model, onnx=args.onnx,
                   checkpoint_acc=result.pop("acc", None), file_bytes=len(data),
                   float_weights_bytes=float_bytes, paper_bytes=paper, **result)


def main(args):
    if sum(map(bool, (args.export, args.load, args.onnx))) != 1:
        raise BSQError("give either --model CKPT with --export FILE or --onnx FILE, "
                       "or --load FILE")
    output = ("--export", args.export) if args.export else ("--onnx", args.onnx)
    if not args.load:
        check_output(*output, args.overwrite)
    device = setup(args)
    if args.onnx:
        return onnx_main(args, device)
    source = None
    if args.export:
        source, ckpt = load_bit_model(args, "--export")
        os.makedirs(os.path.dirname(os.path.abspath(args.export)), exist_ok=True)
        pack(source, args.export, checkpoint=args.model, acc=ckpt.get("acc"))
    path = args.export or args.load
    model, header = unpack(path)
    if source is not None and not same_weights(source, model):
        raise RuntimeError(f"{path} does not rebuild the weights of {args.model}")
    size = sizes(header, os.path.getsize(path))
    print(size_lines(size, path))

    acc = source_acc = None
    if args.evaluate:
        classes = num_classes(args.dataset, args.data_root)
        input_defaults(args, model.arch_spec["arch"])  # --load: the packed network's crops
        if model.arch_spec["num_classes"] != classes:
            raise BSQError(f"{path} has {model.arch_spec['num_classes']} classes, -d "
                           f"{args.dataset} has {classes}: pass the matching -d/--dataset")
        _, test_loader = loaders(args, device)
        acc = evaluate(model.to(device), test_loader)["acc"]
        print(f"packed model: test accuracy {acc:.2f}%")
        if source is not None:
            source_acc = evaluate(source.to(device), test_loader)["acc"]
            print(f"checkpoint {args.model}: test accuracy {source_acc:.2f}%")
    return summary(model, acc, acc, path, checkpoint_acc=source_acc, file_bytes=size["file"],
                   paper_bytes=size["paper"], fp32_bytes=size["fp32"],
                   fp32_ratio=round(size["fp32"] / size["file"], 4))


if __name__ == "__main__":
    run_main(main, get_args_parser())
