"""Full-precision pretraining of a network (the float model BSQ starts from).

    python cifar_train.py -a resnet --depth 20 --checkpoint checkpoints/cifar10/resnet-20

Without ``--checkpoint`` the run goes to ``checkpoints/<dataset>/<network>``, the network named
by its flags (``checkpoints/cifar10/resnet-8`` for ``--depth 8``).
"""
import os
import re

from models import arch_title, load_model, model_config, model_flags
from utils.cli.errors import run_main
from utils.cli.flags import Parser, add_training_flags
from utils.cli.setup import prepare
from utils.data import image_shapes
from utils.errors import BSQError
from utils.recipe import RECIPE
from utils.report.board import open_board
from utils.report.console import summary
from utils.store.rundir import interrupted, open_run
from utils.train.engine import evaluate
from utils.train.fit import Schedule, fit

NAMED_CHECKPOINT = "checkpoints/<dataset>/<network>"  # --checkpoint's default: named_checkpoint


def get_args_parser(add_help=True):
    parser = Parser(description="Full-precision training of a network", add_help=add_help)
    parser.add_flags("model", model_flags())
    add_training_flags(parser, RECIPE["train"], checkpoint=NAMED_CHECKPOINT,
                       evaluate="only evaluate --model; write nothing")
    return parser


def named_checkpoint(args):
    """``checkpoints/<dataset>/<network>``, the network as ``arch_title`` names it, in lower
    case: ``checkpoints/cifar10/resnet-20``, ``checkpoints/cifar100/wrn-28-4``."""
    name = re.sub(r"[^a-z0-9_.]+", "-", arch_title(args).lower()).strip("-")
    return os.path.join("checkpoints", args.dataset, name)


def main(args):
    config = model_config(args)
    if args.checkpoint == NAMED_CHECKPOINT:
        args.checkpoint = named_checkpoint(args)
    run = prepare(args, writes=not args.evaluate)
    model, _ = load_model(args.resume or args.model, run.resume, inputs=image_shapes(args),
                          **config)
    if model.form != "float":
        raise BSQError(f"{args.resume or args.model} is a {model.form} model; cifar_train.py "
                       "trains float models (use cifar_finetune.py)")
    model.to(run.device)
    if args.evaluate:
        acc = evaluate(model, run.test_loader)["acc"]
        return summary(model, acc, acc, args.model)

    print(f"{arch_title(args)} on {args.dataset}, {sum(p.numel() for p in model.parameters())} "
          f"parameters, seed {args.manualSeed}, {run.device}, into {args.checkpoint}")
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
