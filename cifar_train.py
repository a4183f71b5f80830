"""Full-precision pretraining of the CIFAR ResNet (the float model BSQ starts from).

    python cifar_train.py -a resnet --depth 20 --checkpoint checkpoints/cifar10/resnet-20
"""
import os

from models import build_model, load_model
from utils.cli import DATASETS, base_parser, loaders, setup
from utils.engine import evaluate, fit
from utils.errors import BSQError, run_main
from utils.logs import summary


def get_args_parser():
    return base_parser("Full-precision CIFAR ResNet training", epochs=350, lr=0.1,
                       schedule=[150, 250, 325], checkpoint="checkpoints/cifar10/resnet-20")


def main(args):
    device = setup(args, needs_folder=not args.evaluate)
    num_classes = DATASETS[args.dataset]
    train_loader, test_loader, _ = loaders(args, device)
    resume = None
    if args.resume or args.model:
        model, ckpt = load_model(args.resume or args.model, args, num_classes)
        if model.form != "float":
            raise BSQError(f"{args.resume or args.model} is a {model.form} model; "
                           "cifar_train.py trains float models (use cifar_finetune.py)")
        if args.resume:
            resume = ckpt
    else:
        model = build_model(args, num_classes)
    model.to(device)
    if args.evaluate:
        acc = evaluate(model, test_loader)["acc"]
        return summary(model, acc, acc, args.resume or args.model)

    print(f"ResNet-{args.depth} on {args.dataset}, {sum(p.numel() for p in model.parameters())} "
          f"parameters, seed {args.manualSeed}, {device}", flush=True)
    test, best_acc = fit(model, train_loader, test_loader, args, resume=resume)
    return summary(model, test["acc"], best_acc, os.path.join(args.checkpoint, "checkpoint.pth.tar"))


if __name__ == "__main__":
    run_main(main, get_args_parser())
