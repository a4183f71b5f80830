"""Full-precision pretraining of a network (the float model BSQ starts from).

    python cifar_train.py -a resnet --depth 20 --checkpoint checkpoints/cifar10/resnet-20
"""
import os

from models import add_model_flags, arch_title, load_model, model_config
from utils.cli.console import summary
from utils.cli.errors import BSQError, run_main
from utils.cli.flags import Parser, add_training_flags
from utils.cli.setup import prepare
from utils.recipe import RECIPE
from utils.report.board import open_board
from utils.store.rundir import interrupted, open_run
from utils.train.engine import evaluate
from utils.train.fit import Schedule, fit


def get_args_parser(add_help=True):
    parser = Parser(description="Full-precision training of a network", add_help=add_help)
    add_model_flags(parser)
    add_training_flags(parser, RECIPE["train"], checkpoint="checkpoints/cifar10/resnet-20",
                       evaluate="only evaluate --model; write nothing")
    return parser


def main(args):
    config = model_config(args)
    run = prepare(args, writes=not args.evaluate)
    model, _ = load_model(args.resume or args.model, run.resume, **config)
    if model.form != "float":
        raise BSQError(f"{args.resume or args.model} is a {model.form} model; cifar_train.py "
                       "trains float models (use cifar_finetune.py)")
    model.to(run.device)
    if args.evaluate:
        acc = evaluate(model, run.test_loader)["acc"]
        return summary(model, acc, acc, args.model)

    print(f"{arch_title(args)} on {args.dataset}, {sum(p.numel() for p in model.parameters())} "
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
