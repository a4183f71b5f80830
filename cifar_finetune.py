"""Evaluate a BSQ model (``--evaluate``), or finetune it with its quantization scheme fixed.

    python cifar_finetune.py -a resnet --depth 20 --model checkpoints/cifar10/xxx/checkpoint.pth.tar \
        --Nbits 8 --act 4 --bin --evaluate
    python cifar_finetune.py -a resnet --depth 20 --epochs 300 --lr 0.01 --schedule 150 250 \
        --gamma 0.1 --wd 1e-4 --model checkpoints/cifar10/xxx/checkpoint.pth.tar \
        --checkpoint checkpoints/cifar10/xxx-ft --Nbits 8 --act 4 --bin > xxx-ft.txt

Finetuning trains ``W = scale * Q_N(w)`` per layer at the loaded scheme and writes the best
model twice: ``best_float.pth.tar`` (plain float weights) and ``best_bin.pth.tar`` (bits).
"""
import os

from models import load_model
from utils.checkpoint import checkpoint_state, save_checkpoint
from utils.cli import DATASETS, add_bit_args, base_parser, loaders, setup
from utils.engine import evaluate, fit
from utils.errors import BSQError, run_main
from utils.logs import scheme_report, summary, write_scheme_json


def get_args_parser():
    parser = base_parser("Evaluate or finetune a BSQ model with its scheme fixed", epochs=300,
                         lr=0.01, schedule=[150, 250], checkpoint="checkpoints/cifar10/bsq-ft")
    add_bit_args(parser, bin_help="--model is in bit representation (without it: a float model, "
                                  "finetuned at a uniform --Nbits)")
    return parser


def check_form(model, args, path):
    """The flags must describe the checkpoint: ``--bin`` for bit models, none for float ones."""
    if args.bin and model.form == "float":
        raise BSQError(f"{path} is a float model but --bin was given: drop --bin")
    if not args.bin and model.form != "float":
        raise BSQError(f"{path} is a bit-representation model: add --bin")


def alphas(model):
    return {n: round(p.item(), 4) for n, p in model.named_parameters() if n.endswith("alpha")}


def main(args):
    device = setup(args, needs_folder=not args.evaluate)
    path = args.resume or args.model
    if not path:
        raise BSQError("cifar_finetune.py needs --model (or --resume): the checkpoint to use")
    num_classes = DATASETS[args.dataset]
    train_loader, test_loader, _ = loaders(args, device)
    model, ckpt = load_model(path, args, num_classes)
    check_form(model, args, path)
    model.to(device)

    if args.evaluate:
        acc = evaluate(model, test_loader)["acc"]
        print(f"test accuracy {acc:.2f}%")
        if model.form != "float":
            print(scheme_report(model.to_bits_(), acc))
        if alphas(model):
            print(f"PACT alphas: {alphas(model)}")
        return summary(model, acc, ckpt.get("best_acc"), path)

    resume = None
    if args.resume:
        resume = ckpt
    elif model.form == "float":
        model.to_bits_(args.Nbits)
    model.to_finetune_()
    print(f"finetuning ResNet-{args.depth} at {model.avg_bits():.3f} bits per weight "
          f"({model.compression():.2f}x), seed {args.manualSeed}, {device}", flush=True)
    fit(model, train_loader, test_loader, args, resume=resume)

    best_path = os.path.join(args.checkpoint, "model_best.pth.tar")
    float_path = os.path.join(args.checkpoint, "best_float.pth.tar")
    bin_path = os.path.join(args.checkpoint, "best_bin.pth.tar")
    best, best_ckpt = load_model(best_path, args, num_classes)
    best_acc, scheme = best_ckpt["acc"], best.scheme()
    save_checkpoint(checkpoint_state(best.to_float_(), args.epochs, best_acc, best_acc, None, args,
                                     scheme), float_path)
    best, _ = load_model(best_path, args, num_classes)
    best.to_bits_().to(device)
    acc = evaluate(best, test_loader)["acc"]
    save_checkpoint(checkpoint_state(best, args.epochs, acc, best_acc, None, args), bin_path)
    print(scheme_report(best, acc))
    write_scheme_json(best, os.path.join(args.checkpoint, "scheme.json"), acc)
    print(f"best model written to {float_path} and {bin_path}: test accuracy {acc:.2f}%",
          flush=True)
    return summary(best, acc, best_acc, bin_path)


if __name__ == "__main__":
    run_main(main, get_args_parser())
