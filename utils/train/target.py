"""BSQ to a budget: alpha adjusted during training so that the model ends at a size it is given.

A ``Budget`` is average weight bits (``--target-bits``; ``--target-compression X`` is
``32 / X`` bits) or bit-operations per image (``--target-bops``). The ``AlphaController`` holds
alpha as a 0-dim tensor that the training step reads, and every ``EVERY`` steps measures the size
the model would have if it were re-quantized now (``BitModel.requantized_scheme``, a dry run of
the re-quantization rule that changes nothing). The size lags alpha by about an epoch (a plane
goes only when every weight's bit in it is zero), so the controller steers by where the size is
heading, not where it is: with ``s`` the mean log size of the last ``SMOOTH`` dry runs, ``v``
its fall per step over the last epoch (0 while it rises), ``h`` the lesser of ``HORIZON`` epochs
and the steps left, and a reference that falls geometrically from the start's size to the
target by the last re-quantization during training (step ``T``),

    ref(t) = start * (target / start) ** min(1, t / T)
    alpha <- alpha * clip(exp(s - v * h) / ref(t + h), SHRINK ** -(EVERY / E), GROW ** (EVERY / E))

(``E`` steps per epoch): alpha grows, by at most ``GROW`` per epoch (``SEARCH`` until the size
first falls: the dead time in which no plane can empty yet), only while the size would still be
above the reference ``h`` steps ahead at its present rate, and shrinks, by at most ``SHRINK`` per
epoch, when that rate would carry it below; within ``ALPHA_RANGE``, from ``ALPHA0``. Planes do
not come back after a re-quantization, so the rule errs late, and the budget is met by dropping
planes: at the re-quantization at step ``T`` ``BitModel.meet_`` drops the smallest planes until
the model is within it, so that the epochs after it (at the schedule's lower learning rate, where
the size hardly moves) train at the budget's size, and again after the final re-quantization if
it is still above.

The first rule (2026-12-07, ``results/budgets-v1``) compared the size now with ``ref(t)`` and moved
alpha by up to x1.1 per 20 steps: during the first epoch, when no plane can empty yet, it wound
alpha up to 0.2-0.3, then to its bound while the size lagged, and cut two ResNet-20 runs past
their targets (16x to 21.6x, 20x to 24.8x).
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch

from utils.errors import BSQError
from utils.names import option
from utils.quant.bits import FLOAT_BITS

ALPHA0 = 0.01  # the release's --decay default
EVERY = 20  # steps between updates
SMOOTH = 5  # dry runs averaged (in log) into the size the rule reads
HORIZON = 2.0  # epochs the size's present rate is extrapolated over
GROW = 2.0  # the largest rise of alpha per epoch
SEARCH = 8.0  # the same until the dry run's size first falls
SHRINK = 8.0  # the largest fall of alpha per epoch
ALPHA_RANGE = (1e-4, 1.0)  # 1/100 and 100 times ALPHA0


@dataclass(frozen=True)
class Budget:
    """The size a BSQ run must end at: ``measure`` ``"bits"`` (TB/TP) or ``"bops"`` (per image)
    at most ``target``; ``flag`` is how it was asked for (``--target-compression 16``)."""
    measure: str
    target: float
    flag: str

    @classmethod
    def from_args(cls, args):
        """The budget the flags ask for, or None; ``BSQError`` for one that cannot be met."""
        given = [(name, getattr(args, name, None)) for name in
                 ("target_bits", "target_compression", "target_bops")]
        given = [(name, value) for name, value in given if value is not None]
        if not given:
            return None
        if len(given) > 1:
            raise BSQError(f"{' and '.join(option(n) for n, _ in given)} ask for two budgets: "
                           "give one")
        name, value = given[0]
        flag = f"{option(name)} {value:g}"
        if args.decay is not None:
            raise BSQError(f"{flag} sets alpha itself: drop --decay {args.decay:g}")
        if not args.L1:
            raise BSQError(f"{flag} needs the regularizer: add --L1")
        if name == "target_compression":
            return cls("bits", FLOAT_BITS / value, flag)
        if name == "target_bops":
            return cls("bops", value * 1e9, flag)  # given in billions
        return cls("bits", value, flag)

    def size(self, model, scheme=None):
        """The model's size in this budget's measure, at its precisions or at ``scheme``."""
        if self.measure == "bops":
            return model.bops(scheme)
        total, bits = model.size(scheme)
        return bits / total

    def over(self, model):
        """Whether ``model`` is above the budget."""
        return self.size(model) > self.target

    def check_start(self, model):
        """``BSQError`` when the starting model already meets the budget: nothing to train for."""
        size = self.size(model)
        if size <= self.target:
            raise BSQError(f"{self.flag} is not below the starting model's size ({self.show(size)})"
                           ": give a smaller target, or use --decay")

    def show(self, size):
        return (f"{size / 1e9:.4g} GBOPs" if self.measure == "bops" else
                f"{size:.3f} bits, {FLOAT_BITS / size:.2f}x")


class AlphaController:
    """Alpha of a budgeted run (the module's rule): ``alpha``, a 0-dim tensor the step reads,
    updated in place by ``update(t)`` at global step ``t`` (from 0 over the run); ``reach``:
    ``T``, the step by which the reference reaches the target; ``end``: the run's last step + 1;
    ``epoch``: steps per epoch; ``history``: ``(step, alpha, size)`` of each update, ``size``
    the dry run's; ``dropped``: the planes dropped to meet the budget at the re-quantization at
    step ``T``. ``measure()``: the dry run's size, ``budget``'s measure of
    ``model.requantized_scheme(thre)`` unless given."""

    def __init__(self, budget, model, start_size, reach, end, epoch, thre=0.0, device="cpu",
                 measure=None):
        self.budget, self.start, self.reach = budget, start_size, max(1, reach)
        self.end, self.epoch = end, max(1, epoch)
        self.measure = measure or (lambda: budget.size(model, model.requantized_scheme(thre)))
        self.alpha = torch.tensor(ALPHA0, dtype=torch.float32, device=device)
        self.history, self.dropped = [], 0

    def reference(self, t):
        return self.start * (self.budget.target / self.start) ** min(1.0, t / self.reach)

    def heading(self, t, size):
        """``(s, v)`` of the rule at step ``t`` with the dry run's ``size``: the mean log size of
        the last ``SMOOTH`` dry runs, and its fall per step since the same mean an epoch of
        updates before (0 while rising, and until there is one)."""
        back = max(1, round(self.epoch / EVERY))  # updates in an epoch
        tail = self.history[-(back + SMOOTH - 1):] + [(t, None, size)]  # all the rule reads
        logs = [math.log(s) for _, _, s in tail]
        now = sum(logs[-SMOOTH:]) / len(logs[-SMOOTH:])
        if len(self.history) < back:
            return now, 0.0
        then = logs[-back - SMOOTH:-back]
        return now, max(0.0, (sum(then) / len(then) - now) / (t - tail[-1 - back][0]))

    def update(self, t):
        """At global step ``t``: every ``EVERY`` steps, a dry run, and alpha scaled by the rule."""
        if t % EVERY:
            return
        size = self.measure()
        now, fall = self.heading(t, size)
        ahead = min(HORIZON * self.epoch, max(0, self.end - t))
        gap = now - fall * ahead - math.log(self.reference(t + ahead))
        per_update = EVERY / self.epoch
        sizes = [s for _, _, s in self.history] + [size]
        grow = (GROW if min(sizes) < sizes[0] else SEARCH) ** per_update  # has it moved yet?
        factor = min(grow, max(SHRINK ** -per_update, math.exp(gap)))
        value = min(ALPHA_RANGE[1], max(ALPHA_RANGE[0], self.value() * factor))
        self.alpha.fill_(value)
        self.history.append((t, value, size))

    def value(self):
        return float(self.alpha)

    def report(self):
        """``controller.json``: the start's size, the planes dropped at step ``T`` and every
        update (``step``, ``alpha`` after it, the dry run's ``size``)."""
        return {"start": self.start, "dropped_in_training": self.dropped,
                "updates": [{"step": t, "alpha": alpha, "size": size}
                            for t, alpha, size in self.history]}

    def state_dict(self):
        """What a checkpoint keeps for ``--resume``: alpha, the start's size, the updates, the
        planes dropped at step ``T``."""
        return {"alpha": self.value(), "start": self.start, "dropped": self.dropped,
                "history": [list(update) for update in self.history]}

    def load_state_dict(self, state: Optional[dict]):
        if state:
            self.alpha.fill_(state["alpha"])
            self.start = state["start"]
            self.history = [tuple(update) for update in state.get("history", ())]
            self.dropped = state.get("dropped", 0)


def reach_step(epochs, prun_int, steps_per_epoch):
    """``T``: the first step of the epoch that the last re-quantization during training precedes
    (re-quantizations come before each epoch ``e`` with ``e % Prun_Int == 0``), or the run's end
    without one after the first epoch."""
    last = max((e for e in range(1, epochs) if prun_int and e % prun_int == 0), default=epochs)
    return last * steps_per_epoch
