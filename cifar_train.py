"""Full-precision pretraining of the CIFAR ResNet (the float model BSQ starts from).

    python cifar_train.py -a resnet --depth 20 --checkpoint checkpoints/cifar10/resnet-20
"""
import os

from models import load_model
from utils.board import open_board
from utils.cli import RECIPE, Parser, add_training_flags
from utils.console import summary
from utils.engine import evaluate
from utils.errors import BSQError, run_main
from utils.fit import Schedule, fit
from utils.rundir import interrupted, open_run
from utils.setup import model_config, prepare


def get_args_parser(add_help=True):
    parser = Parser(description="Full-precision CIFAR ResNet training", add_help=add_help)
    add_training_flags(parser, RECIPE["train"], checkpoint="checkpoints/cifar10/resnet-20",
                       evaluate="only evaluate --model; write nothing")
    return parser


def main(args):
    run = prepare(args, writes=not args.evaluate)
    model, _ = load_model(args.resume or args.model, run.resume, **model_config(args))
    if model.form != "float":
        raise BSQError(f"{args.resume or args.model} is a {model.form} model; cifar_train.py "
                       "trains float models (use cifar_finetune.py)")
    model.to(run.device)
    if args.evaluate:
        acc = evaluate(model, run.test_loader)["acc"]
        return summary(model, acc, acc, args.model)

    print(f"ResNet-{args.depth} on {args.dataset}, {sum(p.numel() for p in model.parameters())} "
          f"parameters, seed {args.manualSeed}, {run.device}")
    board = open_board(args, run.resume)
    with open_run(args):
        test, best_acc = fit(model, run.train_loader, run.test_loader, Schedule.from_args(args),
                             args.checkpoint, speed=run.speed, resume=run.resume,
                             start_epoch=args.start_epoch, progress_every=args.progress,
                             record=args, board=board)
    return board.finish(args, summary(model, test["acc"], best_acc,
                                      os.path.join(args.checkpoint, "checkpoint.pth.tar")))


if __name__ == "__main__":
    run_main(main, get_args_parser(), interrupted=interrupted)
