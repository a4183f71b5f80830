"""Write a BSQ model at its true size (the packed format of ``utils/export.py``), or read one back.

    python export.py -a resnet --depth 20 --model checkpoints/cifar10/xxx-ft/best_bin.pth.tar \
        --act 4 --export checkpoints/cifar10/xxx-ft/model.bsq [--evaluate]
    python export.py --load checkpoints/cifar10/xxx-ft/model.bsq --evaluate

Exporting rebuilds the model from the written file and checks that every weight the forward pass
uses is identical; ``--evaluate`` also runs both on the test set. The sizes printed are the
paper's (TB bits / 8, no sign bits or float layers), the file's real size, and the ratio of
the unquantized fp32 model's tensor bytes to each.
"""
import os

from models import load_model
from models.packed import export_model, load_packed, same_weights, sizes
from utils.cli import DATASETS, base_parser, loaders, setup
from utils.engine import evaluate
from utils.errors import BSQError, run_main
from utils.logs import summary


def get_args_parser():
    parser = base_parser("Export a BSQ model as packed integers, or evaluate a packed file",
                         epochs=0, lr=0.1, schedule=[], checkpoint="")
    parser.add_argument("--export", default="", metavar="FILE",
                        help="write --model (a bit or finetune checkpoint) to this packed file")
    parser.add_argument("--load", default="", metavar="FILE",
                        help="rebuild the model from this packed file instead")
    parser.add_argument("--Nbits", type=int, default=8, help="accepted for the release's flags")
    parser.add_argument("--bin", action="store_true", help="accepted for the release's flags")
    return parser


def size_lines(size, path):
    """The human-readable size report of a packed file."""
    comp = 32 * size["TP"] / size["TB"] if size["TB"] else float("inf")
    return "\n".join([
        f"packed model {path}",
        f"  paper size, TB/8       {size['paper']:>12.0f} bytes  (TB {size['TB']} bits for TP "
        f"{size['TP']} weights, 32 TP/TB = {comp:.2f}x)",
        f"  quantized tensors      {size['quantized']:>12} bytes  (scales, sign bits, magnitudes)",
        f"  float tensors          {size['float']:>12} bytes  (BatchNorm, shortcut convs, PACT)",
        f"  header                 {size['header']:>12} bytes",
        f"  file                   {size['file']:>12} bytes",
        f"  fp32 model             {size['fp32']:>12} bytes  = {size['fp32'] / size['file']:.2f}x "
        "the file"])


def main(args):
    if bool(args.export) == bool(args.load):
        raise BSQError("give either --model CKPT --export FILE, or --load FILE")
    if args.export and not args.model:
        raise BSQError("--export needs --model: the bit or finetune checkpoint to pack")
    device = setup(args, needs_folder=False)
    source = None
    if args.export:
        source, ckpt = load_model(args.model, args, DATASETS[args.dataset])
        if source.form == "float":
            raise BSQError(f"--model {args.model} is a float model: convert it to bits first "
                           "(convert.py) or give a BSQ / finetune checkpoint")
        folder = os.path.dirname(os.path.abspath(args.export))
        try:
            os.makedirs(folder, exist_ok=True)
            export_model(source, args.export, checkpoint=args.model, acc=ckpt.get("acc"))
        except OSError as e:
            raise BSQError(f"--export {args.export} cannot be written ({e.strerror})") from None
    path = args.export or args.load
    model, header = load_packed(path)
    if source is not None and not same_weights(source, model):
        raise RuntimeError(f"{path} does not rebuild the weights of {args.model}")
    size = sizes(header, os.path.getsize(path))
    print(size_lines(size, path), flush=True)

    acc = source_acc = None
    if args.evaluate:
        if model.num_classes != DATASETS[args.dataset]:
            raise BSQError(f"{path} has {model.num_classes} classes, -d {args.dataset} has "
                           f"{DATASETS[args.dataset]}: pass the matching -d/--dataset")
        _, test_loader, _ = loaders(args, device)
        acc = evaluate(model.to(device), test_loader)["acc"]
        print(f"packed model: test accuracy {acc:.2f}%", flush=True)
        if source is not None:
            source_acc = evaluate(source.to(device), test_loader)["acc"]
            print(f"checkpoint {args.model}: test accuracy {source_acc:.2f}%", flush=True)
    return summary(model, acc, acc, path, checkpoint_acc=source_acc, file_bytes=size["file"],
                   paper_bytes=size["paper"], fp32_bytes=size["fp32"],
                   fp32_ratio=round(size["fp32"] / size["file"], 4))


if __name__ == "__main__":
    run_main(main, get_args_parser())
