"""The training and test steps, and the loops that run them over a loader.

``make_step`` and ``make_eval_step`` build the steps; ``build_steps`` wraps them the way a run's
speed flags ask (DDP under torchrun, ``torch.compile``, CUDA graphs); ``train_one_epoch`` and
``evaluate`` loop them over a loader. Statistics are accumulated on the device and read back once
per epoch (and when a progress line is due), so the steps make no host sync and can be replayed
as CUDA graphs (``utils/train/cudagraphs.py``).
"""
import contextlib
import math
import sys
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from utils.errors import BSQError
from utils.ranks import world
from utils.report.meters import meters, top_k
from utils.train import distributed
from utils.train.cudagraphs import CUDAGraphStep


class NonFiniteLoss(BSQError):
    """The loss became NaN or infinite; ``fit`` adds what to do, which depends on whether an
    epoch was saved."""


@dataclass(frozen=True)
class Speed:
    """How the steps run. ``cuda_graphs`` (one CUDA GPU) replays the eager kernels: the same
    results; ``amp``, ``channels_last`` and ``compile`` may round differently in fp32."""
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False


def make_step(model, optimizer, decay=0.0, amp=False, channels_last=False, net=None, clamp=True):
    """The training step ``step(x, y)``: ``CE + decay * B / TP``, backward, optimizer step, clamp.
    ``decay``: alpha, a number, or a 0-dim tensor that a budget's controller changes in place.

    ``net`` is what the forward pass calls, ``model`` (the ``BitModel``) unless given: its DDP
    wrapper or compiled view. ``amp`` runs the forward pass under bf16 autocast (the layers keep
    their quantizers in fp32); the regularizer is computed once per step, outside autocast, in
    fp32, and added as the release adds it: ``(decay * B) / TP`` (docs/method.md, "Objective").
    ``clamp``: ``model.clamp_()`` after the optimizer step (the release's BSQ clamps only with
    ``--bin``). Returns ``meters(...)`` of the batch and ``B / TP``: a (3,) float64 device tensor.
    The step makes no host sync and no host-to-device copy, so it can be captured as a CUDA graph.
    """
    net = model if net is None else net
    total_params = model.size()[0]  # TP: fixed by the architecture, whatever the precisions
    regularized = isinstance(decay, torch.Tensor) or bool(decay)  # a tensor: a budget's alpha

    def step(x, y):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, torch.bfloat16, enabled=amp, cache_enabled=False):
            logits = net(x)
        logits = logits.float()
        ce = F.cross_entropy(logits, y)
        if regularized:
            bits = model.regularizer()  # B of Eq. 5
            loss = ce + decay * bits / total_params
        else:
            loss, bits = ce, torch.zeros_like(ce)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if clamp:
            model.clamp_()
        return torch.cat([meters(ce.detach(), logits.detach(), y),
                          (bits.detach().double() / total_params).reshape(1)])

    return step


def make_eval_step(model):
    """The test step ``step(x, y)``: ``meters`` of the batch and its ``top_k``, a (3,) float64
    tensor (the first two exactly as the training step's)."""

    def step(x, y):
        logits = model(x)
        return torch.cat([meters(F.cross_entropy(logits, y), logits, y), top_k(logits, y)])

    return step


def make_optimizer(model, lr, momentum, wd):
    """SGD with momentum and weight decay over all parameters, as in the release; the
    multi-tensor (foreach) kernels on every device: fewer launches, the same arithmetic (tested
    bit for bit against the per-tensor loop on the CPU)."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd,
                           foreach=True)


def build_steps(model, optimizer, device, speed, decay=0.0, clamp=True):
    """The training and test steps of a run, rebuilt after every precision change.

    The training step calls the model wrapped for DDP under torchrun, and compiled with
    ``speed.compile``. BSQ's step is thousands of small kernels, and on a GPU launching them one
    by one from Python is most of its time: with ``speed.cuda_graphs`` each whole step, training
    and test, is replayed as one CUDA graph (``CUDAGraphStep``); without it, ``compile`` captures
    the compiled passes itself on one GPU (mode ``reduce-overhead``).
    """
    net = distributed.wrap(model, device)
    one_gpu = device.type == "cuda" and world()[1] == 1
    if speed.compile:
        # plane_weights is an lru_cache of a pure function, so tracing through it is exact
        warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_")
        own_graphs = one_gpu and not speed.cuda_graphs
        net = torch.compile(net, mode="reduce-overhead" if own_graphs else "default")
    train = make_step(model, optimizer, decay, speed.amp, speed.channels_last, net, clamp)
    test = make_eval_step(model)
    if speed.cuda_graphs:
        lrs = lambda: [group["lr"] for group in optimizer.param_groups]  # noqa: E731
        train, test = CUDAGraphStep(train, key=lrs), CUDAGraphStep(test)
    return train, test


def train_one_epoch(model, loader, step, progress=None, after_step=None):
    """One epoch of ``step`` (see ``make_step``) over ``loader``, ``model`` in train mode.

    ``progress`` (``utils.report.console.Progress``) is told after every step, and
    ``after_step(i)`` called with the step's index in the epoch. Returns ``{"loss",
    "reg", "acc"}``: mean cross-entropy, the regularizer ``B/TP`` at the epoch's last step (0
    when the step has no decay), and training accuracy in percent, all as the release logs them.
    Raises ``NonFiniteLoss`` when the loss is NaN or infinite.
    """
    model.train()
    device = next(model.parameters()).device
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # ce * n, top-1 * n
    reg = torch.zeros((), dtype=torch.float64, device=device)
    count = 0

    def running():
        ce_sum, acc_sum = totals.tolist()
        return ce_sum / count, acc_sum / count

    for i, (x, y) in enumerate(loader):
        stats = step(x, y)
        totals += stats[:2]
        reg = stats[2]
        count += len(y)
        if progress is not None:
            progress.tick(i + 1, running)
        if after_step is not None:
            after_step(i)
    totals = torch.cat([totals, totals.new_tensor([count])])
    ce_sum, acc_sum, count = distributed.all_reduce_(totals).tolist()
    reg = reg.item()
    if not math.isfinite(ce_sum + reg):
        raise NonFiniteLoss("the training loss became non-finite")
    return {"loss": ce_sum / count, "reg": reg, "acc": acc_sum / count}


@torch.no_grad()
def evaluate(model, loader, step=None):
    """Test loss, accuracy and top-5 accuracy (percent) of ``model`` in eval mode, the first two
    as the release computes them, through ``step`` when given (e.g. ``make_eval_step`` replayed
    as a CUDA graph). Returns ``{"loss", "acc", "acc5"}``.

    No weight changes during a test pass, so a model with ``frozen_weights`` (a ``BitModel``)
    builds its quantized weights once for the pass instead of once per batch; a CUDA graph
    builds them inside its replay, as it was captured.
    """
    model.eval()
    step = step or make_eval_step(model)
    frozen = getattr(model, "frozen_weights", None)
    weights = contextlib.nullcontext() if frozen is None or isinstance(step, CUDAGraphStep) \
        else frozen()
    device = next(model.parameters()).device
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # ce * n, top-1 * n, top-5 * n
    count = 0
    with weights:
        for x, y in tqdm(loader, desc="test", file=sys.stderr, leave=False, disable=None):
            totals += step(x, y)
            count += len(y)
    loss, acc, acc5 = totals.tolist()
    return {"loss": loss / count, "acc": acc / count, "acc5": acc5 / count}
