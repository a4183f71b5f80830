"""Evaluate a BSQ model (``--evaluate``), or finetune it with its quantization scheme fixed.

    python cifar_finetune.py -a resnet --depth 20 \
        --model checkpoints/cifar10/xxx/checkpoint.pth.tar --Nbits 8 --act 4 --bin --evaluate
    python cifar_finetune.py -a resnet --depth 20 --epochs 300 --lr 0.01 --schedule 150 250 \
        --gamma 0.1 --wd 1e-4 --model checkpoints/cifar10/xxx/checkpoint.pth.tar \
        --checkpoint checkpoints/cifar10/xxx-ft --Nbits 8 --act 4 --bin > xxx-ft.txt

Finetuning trains ``W = scale * Q_N(w)`` per layer at the loaded scheme and writes the best
model twice: ``best_float.pth.tar`` (plain float weights) and ``best_bin.pth.tar`` (bits).
"""
import copy
import os

from models import load_model
from utils.board import open_board
from utils.checkpoint import checkpoint_state, save_checkpoint
from utils.cli import RECIPE, Parser, add_bit_flags, add_training_flags
from utils.console import summary, times
from utils.engine import evaluate
from utils.errors import BSQError, run_main
from utils.fit import Schedule, fit
from utils.report import scheme_report, write_scheme_json
from utils.rundir import interrupted, open_run
from utils.setup import check_form, model_config, prepare


def get_args_parser(add_help=True):
    parser = Parser(description="Evaluate or finetune a BSQ model with its scheme fixed",
                    add_help=add_help)
    add_training_flags(parser, RECIPE["finetune"], checkpoint="checkpoints/cifar10/bsq-ft",
                       evaluate="only evaluate --model: accuracy, ones per bit plane, precision "
                                "per layer, compression; write nothing")
    add_bit_flags(parser, nbits_help="precision a float --model is finetuned at",
                  bin_help="--model is in bit representation (without it: a float model)")
    return parser


def alphas(model):
    return {n: round(p.item(), 4) for n, p in model.named_parameters() if n.endswith("alpha")}


def main(args):
    if not (args.resume or args.model):
        raise BSQError("cifar_finetune.py needs --model (or --resume): the checkpoint to use")
    run = prepare(args, writes=not args.evaluate)
    model, ckpt = load_model(args.resume or args.model, run.resume, **model_config(args))
    if run.resume is None:
        check_form(model, args, args.model)
    model.to(run.device)

    if args.evaluate:
        acc = evaluate(model, run.test_loader)["acc"]
        print(f"test accuracy {acc:.2f}%")
        if model.form != "float":
            model.to_bits_()  # the report counts the ones of each bit plane
            print(scheme_report(model, acc))
        if alphas(model):
            print(f"PACT alphas: {alphas(model)}")
        return summary(model, acc, ckpt.get("best_acc"), args.model)

    if run.resume is None:
        if model.form == "float":
            model.to_bits_(args.Nbits)
        model.to_finetune_()
    print(f"finetuning ResNet-{args.depth} at {model.avg_bits():.3f} bits per weight "
          f"({times(model.compression())}), seed {args.manualSeed}, {run.device}")
    folder = args.checkpoint
    board = open_board(args, run.resume)
    with open_run(args):
        fit(model, run.train_loader, run.test_loader, Schedule.from_args(args), folder,
            speed=run.speed, resume=run.resume, start_epoch=args.start_epoch,
            progress_every=args.progress, record=args, board=board)
        best, best_ckpt = load_model(os.path.join(folder, "model_best.pth.tar"),
                                     **model_config(args))
        best_acc = best_ckpt["acc"]
        save_checkpoint(checkpoint_state(copy.deepcopy(best).to_float_(), epoch=args.epochs,
                                         acc=best_acc, best_acc=best_acc, args=args,
                                         scheme=best.scheme()),
                        os.path.join(folder, "best_float.pth.tar"))
        best.to_bits_().to(run.device)
        acc = evaluate(best, run.test_loader)["acc"]
        save_checkpoint(checkpoint_state(best, epoch=args.epochs, acc=acc, best_acc=best_acc,
                                         args=args), os.path.join(folder, "best_bin.pth.tar"))
        print(scheme_report(best, acc))
        write_scheme_json(best, os.path.join(folder, "scheme.json"), acc)
    print(f"best model written to {folder}/best_float.pth.tar and {folder}/best_bin.pth.tar: "
          f"test accuracy {acc:.2f}%")
    return board.finish(args, summary(best, acc, best_acc,
                                      os.path.join(folder, "best_bin.pth.tar")))


if __name__ == "__main__":
    run_main(main, get_args_parser(), interrupted=interrupted)
