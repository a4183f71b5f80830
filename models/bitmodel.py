"""Model-level BSQ operations over every quantized layer of a network."""
import torch.nn as nn

from utils.bits import FLOAT_BITS, clamp_
from utils.corrections import RELEASE
from utils.regularizer import bit_group_lasso

from .bitlayer import FORMS, BitLayer

CLAMP = {"bits": (0.0, 2.0), "finetune": (-1.0, 1.0)}  # docs/method.md: after every step


def release_clamped(name, form):
    """Whether the release clamps the parameter ``name`` after a step in ``form``: in bits form
    every one named without ``scale`` or ``bn`` (bit planes, shortcut convs and their BatchNorm
    ``downsample.1``, PACT's alphas), in finetune form every one named with ``weight`` and
    without ``bn`` (finetune weights, shortcut convs, their BatchNorm's weight)."""
    if form == "bits":
        return "scale" not in name and "bn" not in name
    return "weight" in name and "bn" not in name


class BitModel(nn.Module):
    """Base class of networks built from ``BitLayer``s.

    It converts all quantized layers between forms together, re-quantizes them, and does the size
    accounting (TP, TB, compression) and the regularizer over exactly the quantized layers: layers
    that are plain ``nn.Conv2d`` (the shortcut convs) or BatchNorm never take part.
    """

    corrections = RELEASE  # set by the subclass's constructor: shared with its layers

    def quant_layers(self):
        """``[(name, layer)]`` of the quantized layers, in module order."""
        return [(name, m) for name, m in self.named_modules() if isinstance(m, BitLayer)]

    @property
    def form(self):
        """``"float"``, ``"bits"`` or ``"finetune"``: the form all quantized layers share."""
        return self.quant_layers()[0][1].form

    def scheme(self):
        """``{layer_name: [N_weight, N_bias]}``, the release's ``Nbit_dict``."""
        return {name: m.precision() for name, m in self.quant_layers()}

    def allocate(self, form, scheme=None):
        """Give every quantized layer empty parameters of ``form`` at ``scheme``'s precisions.

        Used before ``load_state_dict``. Raises ``KeyError`` naming the layers ``scheme`` lacks.
        """
        assert form in FORMS, form
        layers = self.quant_layers()
        if form != "float":
            missing = [name for name, _ in layers if name not in scheme]
            if missing:
                raise KeyError(f"has no precision for layers {', '.join(missing)}")
        for name, m in layers:
            nbits = scheme[name] if scheme else m.precision()
            m.allocate(form, {"weight": nbits[0], "bias": nbits[1]})

    def to_bits_(self, nbits=8):
        """float -> bits at a uniform ``nbits`` or at a scheme ``{name: [N_w, N_b]}``;
        finetune -> bits exactly."""
        for name, m in self.quant_layers():
            entry = nbits[name] if isinstance(nbits, dict) else [nbits, nbits]
            m.to_bits_({"weight": entry[0], "bias": entry[1]})
        return self

    def to_finetune_(self):
        """bits -> finetune (drops all-zero planes first)."""
        for _, m in self.quant_layers():
            m.to_finetune_()
        return self

    def to_float_(self):
        """bits or finetune -> float, keeping the weights the forward pass uses."""
        for _, m in self.quant_layers():
            m.to_float_()
        return self

    def requantize_(self, thre=0.0):
        """Re-quantize and drop planes in every layer (docs/method.md, steps 1-2)."""
        for _, m in self.quant_layers():
            m.requantize_(thre)

    def settle_(self):
        """What the release does to a loaded bit model before training: drop empty planes (or,
        with ``corrections.load_rounding``, re-quantize at threshold 0); see ``BitLayer``."""
        for _, m in self.quant_layers():
            m.settle_()

    def size(self):
        """``(TP, TB)``: quantized weights (classifier bias included) and their bits.

        In float form every weight counts 32 bits.
        """
        sizes = [s for _, m in self.quant_layers() for s in m.sizes()]
        total = sum(numel for numel, _ in sizes)
        if self.form == "float":
            return total, FLOAT_BITS * total
        return total, sum(numel * nbits for numel, nbits in sizes)

    def compression(self):
        """``32 * TP / TB`` (infinite when every layer is zero)."""
        total, bits = self.size()
        return FLOAT_BITS * total / bits if bits else float("inf")

    def avg_bits(self):
        """``TB / TP``, the average precision of a quantized weight."""
        total, bits = self.size()
        return bits / total

    def regularizer(self):
        """``B`` of Eq. 5 over the bit planes (bits form): the loss is ``CE + alpha * B / TP``."""
        return bit_group_lasso([g for _, m in self.quant_layers() for g in m.bit_groups()])

    def clamp_(self):
        """After an optimizer step, bits form to [0, 2] and finetune form to [-1, 1]: the
        parameters the release clamps (``release_clamped``), or with ``corrections.clamp`` only
        the bit planes or the finetune weights ``w``."""
        form = self.form
        if form not in CLAMP:
            return
        if self.corrections.clamp:
            targets = [t for _, m in self.quant_layers() for t in m.clamp_targets()]
        else:
            targets = [p for name, p in self.named_parameters() if release_clamped(name, form)]
        clamp_(targets, *CLAMP[form])
