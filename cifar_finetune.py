"""Evaluate a BSQ model (``--evaluate``), or finetune it with its quantization scheme fixed.

    python cifar_finetune.py -a resnet --depth 20 \
        --model checkpoints/cifar10/xxx/checkpoint.pth.tar --Nbits 8 --act 4 --bin --evaluate
    python cifar_finetune.py -a resnet --depth 20 --epochs 300 --lr 0.01 --schedule 150 250 \
        --gamma 0.1 --wd 1e-4 --model checkpoints/cifar10/xxx/checkpoint.pth.tar \
        --checkpoint checkpoints/cifar10/xxx-ft --Nbits 8 --act 4 --bin > xxx-ft.txt

Finetuning trains ``W = scale * Q_N(w)`` per layer at the loaded scheme, as the release does:
the loaded model's empty planes are dropped, it becomes ``w`` (finetune form) and is written as
epoch 0 (so it is the best model until an epoch beats it), and the best model is written twice at
the end: ``best_bin.pth.tar`` (bits) and ``best_float.pth.tar`` (float weights). Every test pass
the release makes is made here too (the same draws from the random generators).
"""
import copy
import os

from models import arch_title, load_model, model_config, model_flags
from utils.cli.errors import run_main
from utils.cli.flags import Parser, add_bit_flags, add_corrected_flag, add_training_flags
from utils.cli.release import RELEASE_CHECKPOINT, RELEASE_DEFAULTS
from utils.cli.setup import check_form, check_resumed_form, prepare
from utils.data import image_shapes
from utils.errors import BSQError
from utils.report.board import open_board
from utils.report.console import summary, times
from utils.report.scheme import report_scheme, scheme_report
from utils.store.checkpoint import PACT_ALPHA, checkpoint_state, read_scheme, save_checkpoint
from utils.store.rundir import interrupted, open_run
from utils.train.engine import evaluate
from utils.train.fit import Schedule, evaluate_only, fit
from utils.train.rng import rng_state


def get_args_parser(add_help=True):
    parser = Parser(description="Evaluate or finetune a BSQ model with its scheme fixed",
                    add_help=add_help)
    parser.add_flags("model", model_flags())
    add_training_flags(parser, RELEASE_DEFAULTS["finetune"], checkpoint=RELEASE_CHECKPOINT,
                       evaluate="only evaluate --model: accuracy, ones per bit plane, precision "
                                "per layer, compression; write nothing")
    add_bit_flags(parser, nbits_help="precision a float --model is finetuned at",
                  bin_help="--model is in bit representation (without it: a float model)")
    add_corrected_flag(parser)
    return parser


def alphas(model):
    return {n: round(p.item(), 4) for n, p in model.named_parameters()
            if n.endswith("." + PACT_ALPHA)}


def tested(model, loader, what):
    """The test accuracy and top-5 of ``model`` (``evaluate``'s dict), printed as those of
    ``what``."""
    test = evaluate(model, loader)
    print(f"{what}: test accuracy {test['acc']:.2f}%, top-5 {test['acc5']:.2f}%")
    return test


def to_finetune(model, args, ckpt, loader):
    """The loaded ``model`` in finetune form, tested at each step as the release does: as loaded,
    after its empty planes are dropped, in finetune form (without the classifier bias unless
    --corrected). A float model is first converted at its scheme or ``--Nbits``. Returns the
    finetune form's test accuracy."""
    tested(model, loader, f"--model {args.model}")
    if model.form == "float":
        model.to_bits_(read_scheme(ckpt) or args.Nbits)
    if model.form == "bits":
        model.settle_()
        tested(model, loader, "its empty planes dropped")
        print(scheme_report(model))
    model.to_finetune_()
    return tested(model, loader, f"in finetune form, {model.avg_bits():.3f} bits per weight "
                                 f"({times(model.compression())})")["acc"]


def result(folder, epoch, accs, recorded, corrections):
    """The end of a run: the test accuracy of each file it wrote, in its form, and where else
    each figure is shown. ``accs``: of ``model_best`` (best ``epoch``, finetune form), of
    ``best_bin`` and of ``best_float``; ``recorded``: the ``acc`` those two record."""
    bias = "with" if corrections.fc_bias else "without"
    seen = (f"epoch {epoch} in finetune form, {bias} the classifier bias, as trained (its "
            "test_acc in log.txt, best_acc of the JSON line)" if epoch else
            f"the loaded model in finetune form, {bias} the classifier bias, which no epoch beat "
            "(best_acc of the JSON line)")
    rows = [("model_best.pth.tar", seen),
            ("best_bin.pth.tar", "the same weights in bit representation"
                                 + ("" if corrections.fc_bias else ", the classifier bias back in")
                                 + " (acc of the JSON line, scheme.json)"),
            ("best_float.pth.tar", "as float weights" + ("" if corrections.best_float else
                                   ", scale * sum_i (p_i - n_i) e_i as the release writes them"))]
    lines = [f"result in {folder}, the test accuracy of each file:"]
    lines += [f"  {acc:6.2f}%  {name:<18}  {what}" for acc, (name, what) in zip(accs, rows)]
    if not corrections.own_acc and recorded is not None:
        lines.append(f"  best_bin and best_float record acc {recorded:.2f}%, the last epoch's, "
                     "as the release does")
    return "\n".join(lines)


def main(args):
    if not (args.resume or args.model):
        raise BSQError("cifar_finetune.py needs --model (or --resume): the checkpoint to use")
    config = model_config(args)
    run = prepare(args, writes=not args.evaluate)
    model, ckpt = load_model(args.resume or args.model, run.resume, inputs=image_shapes(args),
                             **config)
    check_resumed_form(model, args, "finetune")
    if run.resume is None:
        check_form(model, args, args.model)
    model.to(run.device)

    if args.evaluate:
        if alphas(model):
            print(f"PACT alphas: {alphas(model)}")
        return evaluate_only(model, run.test_loader, args.model, ckpt.get("best_acc"))

    folder = args.checkpoint
    print(f"finetuning {arch_title(args)}, seed {args.manualSeed}, "
          f"{'corrected' if args.corrected else 'as the release'}, {run.device}")
    board = open_board(args, run.resume)
    with open_run(args):
        best_acc = 0.0
        if run.resume is None:
            best_acc = to_finetune(model, args, ckpt, run.test_loader)
            state = checkpoint_state(model, acc=best_acc, best_acc=best_acc, args=args,
                                     rng=rng_state())
            for name in ("model_best.pth.tar", "checkpoint.pth.tar"):  # epoch 0, as the release
                save_checkpoint(state, os.path.join(folder, name))
        last, best_acc = fit(model, run.train_loader, run.test_loader, Schedule.from_args(args),
                             folder, speed=run.speed, resume=run.resume, best_acc=best_acc,
                             start_epoch=args.start_epoch, progress_every=args.progress,
                             record=args, board=board)
        best, best_ckpt = load_model(os.path.join(folder, "model_best.pth.tar"), **config)
        best.to(run.device)
        best_form_acc = tested(best, run.test_loader,
                               f"best model, epoch {best_ckpt['epoch']}")["acc"]
        last_acc = last["acc"] if last["acc"] is not None else run.resume.get("acc")
        best.to_bits_()
        test = tested(best, run.test_loader, "best model in bits (best_bin.pth.tar)")
        acc = test["acc"]
        own = best.corrections.own_acc  # the release records the last epoch's accuracy
        save_checkpoint(checkpoint_state(best, epoch=args.epochs, acc=acc if own else last_acc,
                                         best_acc=best_acc, args=args),
                        os.path.join(folder, "best_bin.pth.tar"))
        floats = copy.deepcopy(best).to_float_()
        float_acc = tested(floats, run.test_loader,
                           "best model in float (best_float.pth.tar)")["acc"]
        save_checkpoint(checkpoint_state(floats, epoch=args.epochs,
                                         acc=float_acc if own else last_acc, best_acc=best_acc,
                                         args=args, scheme=floats.scheme()),
                        os.path.join(folder, "best_float.pth.tar"))
        report_scheme(best, folder, acc)
    print(result(folder, best_ckpt["epoch"], (best_form_acc, acc, float_acc), last_acc,
                 best.corrections))
    return board.finish(args, summary(best, acc, best_acc,
                                      os.path.join(folder, "best_bin.pth.tar"), acc5=test["acc5"]))


if __name__ == "__main__":
    run_main(main, get_args_parser(), interrupted=interrupted)
