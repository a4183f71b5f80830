"""BSQ to a budget: alpha adjusted during training so that the model ends at a size it is given.

A ``Budget`` is average weight bits (``--target-bits``; ``--target-compression X`` is
``32 / X`` bits) or bit-operations per image (``--target-bops``). The ``AlphaController`` holds
alpha as a 0-dim tensor that the training step reads, and every ``EVERY`` steps compares the
size the model would have if it were re-quantized now (``BitModel.requantized_scheme``, a dry run
of the re-quantization rule that changes nothing) with a reference that falls geometrically from
the start's size to the target by the last re-quantization during training:

    ref(t) = start * (target / start) ** min(1, t / T)
    alpha <- alpha * clip((size(t) / ref(t)) ** GAIN, 1 / STEP, STEP)

so alpha grows while the planes empty too slowly and shrinks while they empty too fast, by at
most ``STEP`` per update, within ``ALPHA_RANGE``. It starts at ``ALPHA0``, ``--decay``'s default.
The dry run's size lags alpha (a plane goes only when every weight's bit in it is zero), so the
rate is kept low and alpha bounded: with x1.25 per update and no bound, a 3-epoch run to 16x
(ResNet-20, 2026-12-07) drove alpha to 16 within two epochs and its accuracy to 13%. When the last
re-quantization still leaves the model above the budget, ``BitModel.meet_`` drops the smallest
planes until it holds.
"""
from dataclasses import dataclass
from typing import Optional

import torch

from utils.errors import BSQError
from utils.names import option
from utils.quant.bits import FLOAT_BITS

ALPHA0 = 0.01  # the release's --decay default
EVERY = 20  # steps between updates
GAIN = 1.0
STEP = 1.1  # the largest change of alpha per update, up or down: x6.7 per epoch of 391 steps
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
    updated in place by ``update(t)`` at global step ``t``; ``reach``: ``T``, the step by which
    the reference reaches the target; ``history``: ``(step, alpha, size)`` of each update."""

    def __init__(self, budget, model, start_size, reach, thre=0.0, device="cpu"):
        self.budget, self.model, self.thre = budget, model, thre
        self.start, self.reach = start_size, max(1, reach)
        self.alpha = torch.tensor(ALPHA0, dtype=torch.float32, device=device)
        self.history = []

    def reference(self, t):
        return self.start * (self.budget.target / self.start) ** min(1.0, t / self.reach)

    def update(self, t):
        """At global step ``t`` (counted from 0 over the run): every ``EVERY`` steps, the dry run's
        size against ``reference(t)``, and alpha scaled by the rule."""
        if t % EVERY:
            return
        size = self.budget.size(self.model, self.model.requantized_scheme(self.thre))
        factor = min(STEP, max(1 / STEP, (size / self.reference(t)) ** GAIN))
        value = min(ALPHA_RANGE[1], max(ALPHA_RANGE[0], self.value() * factor))
        self.alpha.fill_(value)
        self.history.append((t, value, size))

    def value(self):
        return float(self.alpha)

    def state_dict(self):
        """What a checkpoint keeps for ``--resume``: alpha, the start's size, the updates."""
        return {"alpha": self.value(), "start": self.start,
                "history": [list(update) for update in self.history]}

    def load_state_dict(self, state: Optional[dict]):
        if state:
            self.alpha.fill_(state["alpha"])
            self.start = state["start"]
            self.history = [tuple(update) for update in state.get("history", ())]


def reach_step(epochs, prun_int, steps_per_epoch):
    """``T``: the first step of the epoch that the last re-quantization during training precedes
    (re-quantizations come before each epoch ``e`` with ``e % Prun_Int == 0``), or the run's end
    without one after the first epoch."""
    last = max((e for e in range(1, epochs) if prun_int and e % prun_int == 0), default=epochs)
    return last * steps_per_epoch
