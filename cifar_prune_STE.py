"""BSQ training: bit-level group Lasso on the bit planes, re-quantization every --Prun_Int epochs.

    python cifar_prune_STE.py -a resnet --depth 20 --epochs 350 --lr 0.1 --schedule 250 \
        --gamma 0.1 --wd 1e-4 --model checkpoints/cifar10/resnet-20-8/model_best.pth.tar \
        --decay 0.01 --Prun_Int 100 --thre 0.0 --checkpoint checkpoints/cifar10/xxx \
        --Nbits 8 --act 4 --bin --L1 > xxx.txt

The run is the release's: the same steps, and with ``--loader release`` the same batches and
the same test passes (after loading, after each re-quantization and at the end), so the same
draws from the random generators; ``--corrected`` turns on our corrections.
"""
import os

from models import arch_title, load_model, model_config, model_flags
from utils.cli.errors import run_main
from utils.cli.flags import (
    Parser,
    add_bit_flags,
    add_bsq_flags,
    add_corrected_flag,
    add_training_flags,
)
from utils.cli.release import RELEASE_CHECKPOINT, RELEASE_DECAY, RELEASE_DEFAULTS
from utils.cli.setup import check_form, check_resumed_form, prepare
from utils.data import image_shapes
from utils.errors import BSQError
from utils.report.board import open_board
from utils.report.console import summary, times
from utils.report.scheme import report_scheme
from utils.store.checkpoint import checkpoint_state, read_scheme, save_checkpoint
from utils.store.files import write_json
from utils.store.rundir import interrupted, open_run
from utils.train.engine import evaluate
from utils.train.fit import TARGET, Schedule, evaluate_only, fit
from utils.train.rng import rng_state
from utils.train.target import AlphaController, Budget, reach_step


def get_args_parser(add_help=True):
    parser = Parser(description="BSQ training of a network in bit representation",
                    add_help=add_help)
    parser.add_flags("model", model_flags())
    add_training_flags(parser, RELEASE_DEFAULTS["bsq"], checkpoint=RELEASE_CHECKPOINT,
                       evaluate="only evaluate the (re-quantized) --model; write nothing")
    add_bit_flags(parser, nbits_help="precision a float or random starting model is converted to",
                  bin_help="--model is in bit representation (without it: a float model)")
    add_bsq_flags(parser)
    add_corrected_flag(parser)
    return parser


def main(args):
    config = model_config(args)
    budget = Budget.from_args(args)  # a target: alpha set during training (utils/train/target.py)
    if budget is None and args.decay is None:
        args.decay = RELEASE_DECAY
    allowed = tuple(sorted(set(args.allowed_bits or ())))
    run = prepare(args, writes=not args.evaluate)
    model, ckpt = load_model(args.resume or args.model, run.resume, inputs=image_shapes(args),
                             **config)
    check_resumed_form(model, args, "bits")
    if run.resume is None and args.model:
        check_form(model, args, args.model)
    if model.form == "float":
        scheme = read_scheme(ckpt) if ckpt else None
        start = "--model is a float model" if args.model else "no --model: a random model"
        print(f"{start}: converting it to {'its scheme' if scheme else f'{args.Nbits} bits'}")
        model.to_bits_(scheme or args.Nbits)
    elif model.form == "finetune":  # a finetune run's checkpoint: its bits, exactly
        print(f"--model {args.model} is in finetune form: BSQ continues from its bit "
              "representation (the same weights)")
        model.to_bits_()
    model.to(run.device)
    model.allowed_bits = check_allowed(model, allowed)
    if budget is not None and run.resume is None and not args.evaluate:
        budget.check_start(model)
    if run.resume is None:
        if args.model:
            acc = evaluate(model, run.test_loader)["acc"]
            print(f"--model {args.model}: test accuracy {acc:.2f}%")
        model.settle_()  # as the release does once before the epochs
    if args.evaluate:
        return evaluate_only(model, run.test_loader, args.model)

    def requantize(epoch):
        """docs/method.md, steps 1-3, at the start of every epoch e with e % Prun_Int == 0; a
        budget is met at the last of them, so that the epochs after it train at its size."""
        if not args.Prun_Int or epoch % args.Prun_Int:
            return False
        model.requantize_(args.thre)
        met = ""
        if controller is not None and epoch * len(run.train_loader) == controller.reach:
            controller.dropped = model.meet_(budget.over)
            met = f", {controller.dropped} planes dropped to meet {budget.flag}"
        acc = evaluate(model, run.test_loader)["acc"]  # as the release tests after each one
        print(f"re-quantized before epoch {epoch + 1}: {model.avg_bits():.3f} bits per weight, "
              f"compression {times(model.compression())}{met}, test accuracy {acc:.2f}%")
        return True

    controller = None if budget is None else AlphaController(
        budget, model, budget.size(model), device=run.device, thre=args.thre,
        reach=reach_step(args.epochs, args.Prun_Int, len(run.train_loader)),
        end=args.epochs * len(run.train_loader), epoch=len(run.train_loader))
    decay = controller.alpha if controller is not None else args.decay if args.L1 else 0.0
    goal = (f"alpha {decay}" if controller is None
            else f"{budget.flag}, alpha from {controller.value():g}")
    print(f"BSQ: {arch_title(args)} on {args.dataset}, {goal}, Prun_Int {args.Prun_Int}, "
          f"thre {args.thre}, act {args.act}, seed {args.manualSeed}, "
          f"{'corrected' if args.corrected else 'as the release'}, {run.device}")
    path = os.path.join(args.checkpoint, "checkpoint.pth.tar")
    board = open_board(args, run.resume)
    with open_run(args):
        _, best_acc = fit(model, run.train_loader, run.test_loader, Schedule.from_args(args),
                          args.checkpoint, speed=run.speed, decay=decay,
                          clamp=args.bin or model.corrections.clamp, before_epoch=requantize,
                          resume=run.resume, start_epoch=args.start_epoch,
                          progress_every=args.progress, record=args, board=board,
                          controller=controller)
        model.requantize_(0.0)  # the release's final re-quantization drops only empty planes
        extra = {} if budget is None else met(model, budget, controller, args.checkpoint)
        test = evaluate(model, run.test_loader)
        acc = test["acc"]
        report_scheme(model, args.checkpoint, acc)
        print(f"final re-quantized model: test accuracy {acc:.2f}%, top-5 {test['acc5']:.2f}%")
        kept = {} if controller is None else {TARGET: controller.state_dict()}
        save_checkpoint(checkpoint_state(model, epoch=args.epochs, acc=acc, best_acc=best_acc,
                                         args=args, rng=rng_state(), **kept), path)
    return board.finish(args, summary(model, acc, best_acc, path, acc5=test["acc5"], **extra))


def check_allowed(model, allowed):
    """``--allowed-bits``, checked against the model's precisions: the widest must hold its
    widest layer (a precision is only ever rounded up)."""
    widest = max(n for n, _ in model.scheme().values())  # (bits form)
    if allowed and allowed[-1] < widest:
        raise BSQError(f"--allowed-bits {' '.join(map(str, allowed))} cannot hold the model's "
                       f"{widest}-bit layers: add {widest}")
    return allowed


def met(model, budget, controller, folder):
    """A budgeted run's end: the planes dropped to meet the budget at the last re-quantization
    during training (``requantize``) and after the final one (``BitModel.meet_``), said and
    returned with the alpha trajectory; every update of the controller in ``controller.json``."""
    dropped = model.meet_(budget.over)
    write_json({"target": budget.flag, "measure": budget.measure, **controller.report()},
               os.path.join(folder, "controller.json"))
    size = budget.size(model)
    print(f"{budget.flag}: {budget.show(size)} after the final re-quantization"
          + (f" and {dropped} planes dropped to meet it" if dropped else "")
          + ("" if size <= budget.target else " (no layer can lose a plane: not met)")
          + f"; alpha ended at {controller.value():.4g}")
    return {"target": budget.flag, "dropped_planes": controller.dropped + dropped,
            "dropped_in_training": controller.dropped, "alpha": controller.value(),
            "alphas": [round(a, 6) for _, a, _ in controller.history]}


if __name__ == "__main__":
    run_main(main, get_args_parser(), interrupted=interrupted)
