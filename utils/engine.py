"""The training and evaluation loop shared by every script.

``make_step`` and ``make_eval_step`` build the training and test steps, ``train_one_epoch``
and ``evaluate`` loop them over a loader, and ``fit`` runs the epochs around them (learning-rate
schedule, logging, checkpoints) with an optional ``before_epoch`` hook, which BSQ uses for
re-quantization. Statistics are accumulated on the device and read back once per epoch (and, on
a terminal, every ``PROGRESS_EVERY`` steps for the progress bar), so the step makes no host
sync and can be replayed as a CUDA graph (``utils/graphs.py``).
"""
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import distributed
from .checkpoint import CheckpointError, checkpoint_state, save_checkpoint
from .errors import BSQError
from .graphs import CUDAGraphStep
from .logs import TSVLog, epoch_line

PROGRESS_EVERY = 20


class NonFiniteLoss(BSQError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def unwrap(model):
    """The ``BitModel`` inside a (Distributed)DataParallel wrapper, or the model itself."""
    return getattr(model, "module", model)


def progress(loader, desc):
    """A progress bar on stderr, shown only when stderr is a terminal."""
    return tqdm(loader, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True, disable=None)


def lr_at(epoch, base_lr, schedule, gamma):
    """Step schedule: ``base_lr * gamma^k`` with k the milestones in ``schedule`` reached."""
    return base_lr * gamma ** sum(epoch >= m for m in schedule)


def make_optimizer(model, args):
    """SGD with momentum and weight decay over all parameters, as in the release."""
    return torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                           weight_decay=args.wd)


def make_step(model, optimizer, decay=0.0, amp=False, channels_last=False, net=None):
    """The training step ``step(x, y)``: ``CE + decay * B / TP``, backward, optimizer step, clamp.

    ``net`` is what the forward pass calls, ``model`` (the ``BitModel``) unless given: its DDP
    wrapper or compiled view. ``amp`` runs the forward pass under bf16 autocast (the layers keep
    their quantizers in fp32); the regularizer is computed once per step, outside autocast, in
    fp32, and added as the release adds it: ``(decay * B) / TP``. Returns the step's
    ``[sum of CE, sum of B/TP, correct]`` over the batch as a (3,) device tensor. The step makes
    no host sync and no host-to-device copy, so it can be captured as a CUDA graph.
    """
    net = model if net is None else net
    total_params = model.size()[0]  # TP: fixed by the architecture, whatever the precisions

    def step(x, y):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, torch.bfloat16, enabled=amp, cache_enabled=False):
            logits = net(x)
        ce = F.cross_entropy(logits.float(), y)
        if decay:
            bits = model.regularizer()  # B of Eq. 5
            loss = ce + decay * bits / total_params
            reg = bits.detach() / total_params
        else:
            loss, reg = ce, torch.zeros_like(ce)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.clamp_()
        n = y.numel()
        return torch.stack([ce.detach() * n, reg * n, (logits.argmax(1) == y).sum()])

    return step


def train_one_epoch(model, loader, step, desc="train"):
    """One epoch of ``step`` (see ``make_step``) over ``loader``, ``model`` in train mode.

    Returns ``{"loss", "reg", "acc"}``: mean cross-entropy, mean regularizer ``B/TP`` (0 when
    the step has no decay) and training accuracy in percent.
    """
    model.train()
    device = next(model.parameters()).device
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # ce, reg, correct
    count = 0
    bar = progress(loader, desc)
    for i, (x, y) in enumerate(bar):
        totals += step(x, y)
        count += len(y)
        if not bar.disable and i % PROGRESS_EVERY == 0:
            ce_sum, _, correct = totals.tolist()
            bar.set_postfix(loss=f"{ce_sum / count:.3f}", acc=f"{100 * correct / count:.2f}")
    totals = torch.cat([totals, totals.new_tensor([count])])
    ce_sum, reg_sum, correct, count = distributed.all_reduce_(totals).tolist()
    if not math.isfinite(ce_sum + reg_sum):
        raise NonFiniteLoss("the training loss became non-finite: lower --lr (or --decay); "
                            "the last good checkpoint is kept")
    return {"loss": ce_sum / count, "reg": reg_sum / count, "acc": 100 * correct / count}


def make_eval_step(model):
    """The test step ``step(x, y)``: ``[sum of CE, correct]`` over the batch, a (2,) tensor."""

    def step(x, y):
        logits = model(x)
        return torch.stack([F.cross_entropy(logits, y, reduction="sum"),
                            (logits.argmax(1) == y).sum()])

    return step


@torch.no_grad()
def evaluate(model, loader, desc="test", step=None):
    """Test loss and accuracy (percent) of ``model`` in eval mode, through ``step`` when given
    (e.g. ``make_eval_step`` replayed as a CUDA graph)."""
    model.eval()
    step = step or make_eval_step(model)
    device = next(model.parameters()).device
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # loss, correct
    count = 0
    for x, y in progress(loader, desc):
        totals += step(x, y)
        count += len(y)
    loss, correct = totals.tolist()
    return {"loss": loss / count, "acc": 100 * correct / count}


def rng_state():
    """Every random generator's state, so that a resumed run continues the same stream."""
    _, keys, pos, _, _ = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": torch.from_numpy(np.append(keys, pos).astype(np.int64)),
             "python": torch.tensor(random.getstate()[1], dtype=torch.int64)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore the generators saved by ``rng_state``."""
    torch.set_rng_state(state["torch"])
    keys = state["numpy"].numpy()
    np.random.set_state(("MT19937", keys[:-1].astype(np.uint32), int(keys[-1]), 0, 0.0))
    random.setstate((3, tuple(int(v) for v in state["python"]), None))
    if torch.cuda.is_available() and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_training_state(optimizer, ckpt, path):
    """Load a checkpoint's optimizer state (momentum included) and RNG states for a resume."""
    try:
        if ckpt.get("optimizer"):
            optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("rng"):
            set_rng_state(ckpt["rng"])
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError, AttributeError) as e:
        raise CheckpointError(f"--resume {path}: its optimizer or RNG state does not fit this run "
                              f"({type(e).__name__}): resume with the same flags") from None


def steps(model, optimizer, device, args, decay=0.0):
    """The training and test steps of ``fit``, rebuilt after every precision change.

    The training step calls the model wrapped for DDP under torchrun, and compiled with
    ``--compile``. BSQ's step is thousands of small kernels, and on a GPU launching them one by
    one from Python is most of its time. On a single GPU ``--cuda-graphs`` replays each whole
    step, training and test, as one CUDA graph (``CUDAGraphStep``); without it, ``--compile``
    captures the compiled forward and backward passes (mode ``reduce-overhead``).
    """
    net = distributed.wrap(model, device)
    one_gpu = device.type == "cuda" and distributed.world()[1] == 1
    graphs = one_gpu and args.cuda_graphs
    if args.compile:
        net = torch.compile(net, mode="reduce-overhead" if one_gpu and not graphs else "default")
    train = make_step(model, optimizer, decay, args.amp, args.channels_last, net)
    test = make_eval_step(model)
    if graphs:
        lrs = lambda: [group["lr"] for group in optimizer.param_groups]  # noqa: E731
        train, test = CUDAGraphStep(train, key=lrs), CUDAGraphStep(test)
    return train, test


def fit(model, train_loader, test_loader, args, *, decay=0.0, before_epoch=None, resume=None):
    """Epochs ``args.start_epoch .. args.epochs - 1``: set the lr, train, test, log, checkpoint.

    ``before_epoch(epoch)`` runs first in every epoch; when it returns True the parameter shapes
    changed: the optimizer (momentum restarts) and, under torchrun, the DistributedDataParallel
    wrapper are rebuilt, after checking that every rank holds the same model. Each epoch writes
    ``checkpoint.pth.tar`` (for ``--resume``) and, on a new best test accuracy,
    ``model_best.pth.tar`` into ``args.checkpoint``, and appends a row to ``log.txt``.
    ``resume`` is a loaded checkpoint whose optimizer, best accuracy and RNG state continue.
    Returns the last epoch's test statistics and the best test accuracy.
    """
    bsq = unwrap(model)
    device = next(bsq.parameters()).device
    if args.channels_last:  # the float 4-d weights; weights built from planes follow the input
        for p in bsq.parameters():
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
    optimizer = make_optimizer(bsq, args)
    best_acc = 0.0
    if resume is not None:
        restore_training_state(optimizer, resume, args.resume)
        args.start_epoch, best_acc = resume.get("epoch") or 0, resume.get("best_acc") or 0.0
    train_step, test_step = steps(bsq, optimizer, device, args, decay)
    log = TSVLog(os.path.join(args.checkpoint, "log.txt"),
                 resume_epoch=None if resume is None else args.start_epoch)
    test = {"acc": None}
    for epoch in range(args.start_epoch, args.epochs):
        if before_epoch is not None and before_epoch(epoch):
            distributed.check_replicas(bsq)
            optimizer = make_optimizer(bsq, args)
            train_step, test_step = steps(bsq, optimizer, device, args, decay)
        lr = lr_at(epoch, args.lr, args.schedule, args.gamma)
        for group in optimizer.param_groups:
            group["lr"] = lr
        train_loader.set_epoch(epoch)
        start = time.perf_counter()
        train = train_one_epoch(bsq, train_loader, train_step, f"epoch {epoch + 1}")
        distributed.broadcast_(bsq)  # rank 0's BatchNorm statistics everywhere
        test = evaluate(bsq, test_loader, step=test_step)
        seconds = time.perf_counter() - start
        best_acc = max(best_acc, test["acc"])
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": train["loss"], "train_acc": train["acc"],
               "reg": train["reg"], "test_loss": test["loss"], "test_acc": test["acc"],
               "comp": bsq.compression(), "avg_bits": bsq.avg_bits(), "seconds": seconds}
        state = checkpoint_state(bsq, epoch + 1, test["acc"], best_acc, optimizer, args,
                                 rng=rng_state())
        if test["acc"] == best_acc:
            save_checkpoint(state, os.path.join(args.checkpoint, "model_best.pth.tar"))
        log.append(row)
        # Written last: a run killed before this line resumes from the previous epoch and
        # redoes this one, rewriting model_best and this log row identically.
        save_checkpoint(state, os.path.join(args.checkpoint, "checkpoint.pth.tar"))
        print(epoch_line(row, args.epochs), flush=True)
    distributed.check_replicas(bsq)
    return test, best_acc
