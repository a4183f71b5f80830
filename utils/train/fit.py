"""The epoch loop shared by the training scripts: learning-rate schedule, training, test, log.txt,
checkpoints and progress, with a hook before each epoch (BSQ's re-quantization); and
``--evaluate``'s one test pass.

Each epoch commits ``model_best.pth.tar`` (on a new best test accuracy), its ``log.txt`` row and
then ``checkpoint.pth.tar``, all written atomically: a run killed at any moment resumes from the
last committed epoch and redoes the next one identically.
"""
import copy
import math
import os
import time
from dataclasses import dataclass

import torch

from utils.ranks import is_main
from utils.report.board import NO_BOARD
from utils.report.console import Progress, epoch_line, summary
from utils.report.scheme import scheme_report
from utils.store.checkpoint import CheckpointError, checkpoint_state, save_checkpoint
from utils.store.epochlog import EpochLog
from utils.store.rundir import resume_changes
from utils.train import distributed
from utils.train.engine import (
    NonFiniteLoss,
    Speed,
    build_steps,
    evaluate,
    make_optimizer,
    train_one_epoch,
)
from utils.train.rng import rng_state, set_rng_state

TARGET = "target"  # a budgeted run's controller state, in its checkpoints


def evaluate_only(model, loader, path, best_acc=None):
    """``--evaluate``: one test pass of ``model``, loaded from ``path``; its accuracy and top-5,
    and its scheme report (of its bit representation, the model unchanged) on stdout. Returns
    the final JSON line's figures (``best_acc``: the checkpoint's, or this pass's)."""
    test = evaluate(model, loader)
    print(f"--model {path}: test accuracy {test['acc']:.2f}%, top-5 {test['acc5']:.2f}%")
    if model.form != "float":
        bits = model if model.form == "bits" else copy.deepcopy(model).to_bits_()
        print(scheme_report(bits, test["acc"]))
    return summary(model, test["acc"], test["acc"] if best_acc is None else best_acc, path,
                   acc5=test["acc5"])


@dataclass(frozen=True)
class Schedule:
    """SGD's hyperparameters over a run: ``lr``, multiplied by ``gamma`` at each milestone."""
    epochs: int
    lr: float
    milestones: tuple = ()
    gamma: float = 0.1
    momentum: float = 0.9
    wd: float = 1e-4

    @classmethod
    def from_args(cls, args):
        return cls(args.epochs, args.lr, tuple(args.schedule), args.gamma, args.momentum, args.wd)

    def lr_at(self, epoch):
        """The learning rate of ``epoch``, multiplied by ``gamma`` once at each milestone reached,
        one fp32-visible product after another as the release updates it."""
        lr = self.lr
        for milestone in sorted(set(self.milestones)):
            if epoch >= milestone:
                lr *= self.gamma
        return lr

    def optimizer(self, model):
        return make_optimizer(model, self.lr, self.momentum, self.wd)


def restore_training_state(optimizer, ckpt):
    """Load a checkpoint's optimizer state (momentum included) and RNG states for a resume."""
    try:
        if ckpt.get("optimizer"):
            optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("rng"):
            set_rng_state(ckpt["rng"])
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError, AttributeError) as e:
        raise CheckpointError(f"the --resume checkpoint's optimizer or RNG state does not fit this "
                              f"run ({type(e).__name__}): resume with the same flags") from None


def non_finite_advice(folder):
    """What to do after a non-finite loss: resume from the last saved epoch with a lower --lr or
    --decay, or, when no epoch was saved yet, run again with them."""
    path = os.path.join(folder, "checkpoint.pth.tar")
    if os.path.exists(path):
        return (f"lower --lr (or --decay) and --resume {path}; that checkpoint, the last good "
                "epoch, is kept")
    return "lower --lr (or --decay) and run again: no epoch had finished, so nothing was saved"


def fit(model, train_loader, test_loader, schedule, folder, *, speed=Speed(), decay=0.0,
        clamp=True, before_epoch=None, resume=None, start_epoch=0, best_acc=0.0,
        progress_every=60.0, record=None, board=NO_BOARD, controller=None):
    """Train ``model`` (a ``BitModel``) for epochs ``start_epoch .. schedule.epochs - 1``.

    Each epoch: ``before_epoch(epoch)`` (when it returns True the parameter shapes changed: the
    optimizer, whose momentum restarts, and the steps are rebuilt, after checking under torchrun
    that every rank holds the same model); the lr of the schedule; training (``clamp``: after
    each step, see ``make_step``); test; then the epoch's row in ``folder/log.txt`` and its
    checkpoints in ``folder``: ``model_best`` when the test accuracy beats ``best_acc``, the best
    so far, as in the release. ``resume`` is a loaded checkpoint whose epoch, optimizer, best
    accuracy and RNG state continue. ``record`` (the flags) is stored in every checkpoint;
    ``board`` (``utils/report/board.py``) gets each row and each re-quantization's scheme.
    ``controller`` (``utils/train/target.py``): a budget's, whose alpha tensor is ``decay``;
    updated after every step, kept in each checkpoint, logged with each epoch.
    Returns the last epoch's test statistics and the best test accuracy.
    """
    device = next(model.parameters()).device
    if speed.channels_last:  # the float 4-d weights; weights built from planes follow the input
        for p in model.parameters():
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
    optimizer = schedule.optimizer(model)
    if resume is not None:
        restore_training_state(optimizer, resume)
        start_epoch, best_acc = resume.get("epoch") or 0, resume.get("best_acc") or 0.0
        if controller is not None:
            controller.load_state_dict(resume.get(TARGET))
    train_step, test_step = build_steps(model, optimizer, device, speed, decay, clamp)
    changes = resume_changes(record, resume) if resume is not None and record else ""
    if changes:
        print(f"resuming after epoch {start_epoch} with {changes}")
    log = EpochLog(os.path.join(folder, "log.txt"), start_epoch if resume is not None else None,
                   f"resumed with {changes}" if changes else None,
                   extra=("alpha",) if controller is not None else ())
    progress = Progress(schedule.epochs, start_epoch, progress_every,
                        quiet=not is_main())
    test = {"acc": None}
    for epoch in range(start_epoch, schedule.epochs):
        if before_epoch is not None and before_epoch(epoch):
            board.precisions(epoch + 1, model.scheme())
            distributed.check_replicas(model)
            optimizer = schedule.optimizer(model)
            train_step, test_step = build_steps(model, optimizer, device, speed, decay, clamp)
        lr = schedule.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        train_loader.set_epoch(epoch)
        start = time.perf_counter()
        progress.begin(epoch, len(train_loader))
        first = epoch * len(train_loader)  # the global index of the epoch's first step
        after_step = None if controller is None else (lambda i: controller.update(first + i))
        try:
            train = train_one_epoch(model, train_loader, train_step, progress, after_step)
        except NonFiniteLoss as e:
            raise NonFiniteLoss(f"{e} in epoch {epoch + 1}: {non_finite_advice(folder)}") from None
        progress.end()
        distributed.broadcast_(model)  # rank 0's BatchNorm statistics everywhere
        test = evaluate(model, test_loader, step=test_step)
        if not math.isfinite(test["loss"]):
            raise NonFiniteLoss(f"the test loss became non-finite after epoch {epoch + 1}: "
                                f"{non_finite_advice(folder)}")
        seconds = time.perf_counter() - start
        is_best = test["acc"] > best_acc
        best_acc = max(best_acc, test["acc"])
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": train["loss"], "train_acc": train["acc"],
               "reg": train["reg"], "test_loss": test["loss"], "test_acc": test["acc"],
               "test_acc5": test["acc5"],
               "comp": model.compression(), "avg_bits": model.avg_bits(), "seconds": seconds}
        extra = {}
        if controller is not None:
            row["alpha"], extra[TARGET] = controller.value(), controller.state_dict()
        state = checkpoint_state(model, epoch=epoch + 1, acc=test["acc"], best_acc=best_acc,
                                 optimizer=optimizer, args=record, rng=rng_state(), **extra)
        best = os.path.join(folder, "model_best.pth.tar")
        if is_best or not os.path.exists(best):
            save_checkpoint(state, best)
        log.append(row)
        board.epoch(row)
        # Written last: a run killed before this line resumes from the previous epoch and
        # redoes this one, rewriting model_best and this log row identically.
        save_checkpoint(state, os.path.join(folder, "checkpoint.pth.tar"))
        print(epoch_line(row, schedule.epochs, progress.elapsed(), progress.eta()))
    distributed.check_replicas(model)
    return test, best_acc
