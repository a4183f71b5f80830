"""Weights in bit representation, written once and shared by ``BitConv2d`` and ``BitLinear``.

A quantized layer holds its weight (and, for the classifier, its bias) in one of three forms
(docs/method.md, "Bit representation" and "Finetuning"):

==========  ===========================================  ===================================
form        parameters (weight / bias)                   forward
==========  ===========================================  ===================================
float       ``weight`` / ``bias``                        the float tensor
bits        ``pweight nweight scale`` / ``pbias nbias``   ``scale * Q_N(sum_i (p_i - n_i) e_i)``
            ``biasscale``
finetune    ``weight scale`` / ``bias biasscale``        ``scale * Q_N(w)``, w on the N-bit grid
==========  ===========================================  ===================================

Parameter names, shapes and order are the original release's (``scale`` and ``biasscale`` are
0-dim, as in every bit checkpoint the release writes), so state dicts and optimizer states move
between the two by at most a ``module.`` prefix.

A layer computes the method (``corrections=CORRECTED``, the default): an all-zero tensor goes to
precision 0, outputs zero and gets no gradient, so it stays zero. The release computes a few
things otherwise, and a layer given ``corrections`` without them (``RELEASE``, what the
release's own network gets on the command line; ``utils/quant/corrections.py``) follows it: an
all-zero tensor keeps one zero plane at precision 1 (and in finetune form goes to precision 0,
outputting zero while its gradient passes straight through), the finetune form of a linear layer
drops its bias from the forward pass (the release's classifier), and ``to_float_`` of the bits
form is ``scale * sum_i (p_i - n_i) e_i``.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.quant.bits import (
    allowed_width,
    drop_planes,
    encode,
    plane_value,
    quantize,
    requantize,
    step_down,
    widen,
)
from utils.quant.corrections import CORRECTED
from utils.quant.ste import WeightQuant, levels
from utils.store.checkpoint import NAMES

FORMS = ("float", "bits", "finetune")
# The release's registration order of a layer's parameters: each form's are a subsequence of it.
PARAM_ORDER = ("pweight", "nweight", "scale", "pbias", "nbias", "biasscale", "weight", "bias")




class BitLayer:
    """Mixin for a ``nn.Conv2d`` or ``nn.Linear`` whose weight and bias are BSQ-quantized.

    ``self.nbits`` maps ``"weight"``/``"bias"`` to the precision of each present tensor.
    """

    def _init_bits(self, nbits=8, corrections=CORRECTED):
        self.corrections = corrections
        self.form = "float"
        self.slots = ("weight",) if self.bias is None else ("weight", "bias")
        self.shapes = {slot: tuple(getattr(self, slot).shape) for slot in self.slots}
        self.nbits = {slot: nbits for slot in self.slots}
        self.frozen = None  # {slot: tensor} while BitModel.frozen_weights holds

    def _adopt(self, layer):
        """Take ``layer``'s weight and bias (and its train/eval mode) in place of this layer's."""
        for slot in self.slots:
            setattr(self, slot, getattr(layer, slot))
        return self.train(layer.training)

    # -- forward ---------------------------------------------------------------------------
    def quantized(self, slot):
        """The tensor the forward pass uses for ``slot`` (None when the layer has no such slot).

        Built in fp32 even under autocast: the plane arithmetic and ``Q_N`` need exact levels.
        """
        if not self.uses(slot):
            return None
        if self.frozen is not None:
            return self.frozen[slot]
        if self.form == "float":
            return getattr(self, slot)
        scale = self.scale_of(slot)
        with torch.autocast(scale.device.type, enabled=False):
            return self._build(slot, scale)

    def uses(self, slot):
        """Whether the forward pass uses ``slot``: every present tensor but the classifier bias
        in the release's finetune form (see ``_left_out``)."""
        return slot in self.slots and not self._left_out(self.form, slot)

    def _left_out(self, form, slot):
        """The release's finetune forward has no classifier bias: a linear layer's bias, without
        ``corrections.fc_bias`` (conv biases always stay)."""
        return (form == "finetune" and slot == "bias" and isinstance(self, nn.Linear)
                and not self.corrections.fc_bias)

    def _build(self, slot, scale):
        """``scale * Q_N(w)`` with w from the planes (bits form) or the finetune weight.

        At precision 0: zeros without gradient, except in finetune form as in the release, where
        ``Q_0(w) = w * 0`` passes the gradient straight through to ``w``.
        """
        nbits = self.nbits[slot]
        if nbits == 0 and not self._trains(self.form, 0, slot):
            return scale.new_zeros(self.shapes[slot])
        return WeightQuant.apply(self._value(slot), nbits) * scale

    def _value(self, slot):
        """``w`` before ``Q_N``: ``sum_i (p_i - n_i) e_i`` (bits form) or the finetune weight."""
        if self.form == "bits":
            return plane_value(*self.planes(slot))
        return getattr(self, slot)

    def planes(self, slot):
        """``(p, n)``, the plane tensors of ``slot`` (bits form)."""
        return getattr(self, NAMES[slot].p), getattr(self, NAMES[slot].n)

    def scale_of(self, slot):
        """The 0-dim scale of ``slot`` (bits and finetune forms)."""
        return getattr(self, NAMES[slot].scale)

    # -- parameter bookkeeping --------------------------------------------------------------
    def _trains(self, form, nbits, slot="weight"):
        """Whether ``slot`` at precision ``nbits`` in ``form`` gets gradients: all tensors do but
        those at precision 0 in bits form (with ``corrections.zero_precision``, in any form), and
        a classifier bias that the finetune forward pass leaves out (see ``quantized``)."""
        if self._left_out(form, slot):
            return False
        zero_frozen = form == "bits" or self.corrections.zero_precision
        return form == "float" or nbits > 0 or not zero_frozen

    def _install(self, slot, tensors, trainable=True):
        """Replace ``slot``'s parameters, whatever their form, by ``tensors`` (name -> tensor).

        A frozen tensor (``trainable=False``, see ``_trains``) gets no gradient, so optimizers and
        DistributedDataParallel leave it alone. Parameters stay in the release's order.
        """
        for name in (slot, *NAMES[slot]):
            self._parameters.pop(name, None)
        for name, tensor in tensors.items():
            self.register_parameter(name, nn.Parameter(tensor.contiguous(), trainable))
        if slot not in tensors:
            self.register_parameter(slot, None)
        for name in sorted(self._parameters, key=PARAM_ORDER.index):
            self._parameters[name] = self._parameters.pop(name)

    def _install_bits(self, slot, code, scale, nbits):
        """Install an integer code (slot's shape) at ``nbits`` with a 0-dim ``scale``, bits form."""
        self._install_planes(slot, *encode(code, max(nbits, 1), dtype=scale.dtype), scale, nbits)

    def _install_planes(self, slot, p, n, scale, nbits):
        """Install planes ``p, n`` (..., N) at ``nbits`` with a 0-dim ``scale``, bits form."""
        self.nbits[slot] = nbits
        self._install(slot, dict(zip(NAMES[slot], (p, n, scale))), self._trains("bits", nbits))

    @torch.no_grad()
    def code(self, slot):
        """The signed integer code ``Q_N`` computes for ``slot`` in the forward pass (bits or
        finetune form, exact or continuous bits): ``W = scale * code / (2^N - 1)``, int64."""
        nbits = self.nbits[slot]
        if nbits == 0:
            return torch.zeros(self.shapes[slot], dtype=torch.long,
                               device=self.scale_of(slot).device)
        w = self._value(slot).clamp(-1.0, 1.0)
        return (torch.round(w.abs() * levels(nbits)) * torch.sign(w)).long()

    def allocate(self, form, nbits):
        """Empty parameters of ``form`` at precisions ``nbits`` (slot -> N): to load a state."""
        ref = next(self.parameters())
        for slot in self.slots:
            shape, nb = self.shapes[slot], nbits.get(slot, 0)
            names = NAMES[slot]
            if form == "float":
                tensors = {slot: ref.new_zeros(shape)}
            elif form == "bits":
                planes = shape + (max(nb, 1),)
                tensors = {names.p: ref.new_zeros(planes), names.n: ref.new_zeros(planes),
                           names.scale: ref.new_zeros(())}
            else:
                tensors = {slot: ref.new_zeros(shape), names.scale: ref.new_zeros(())}
            self.nbits[slot] = nb
            self._install(slot, tensors, self._trains(form, nb, slot))
        self.form = form

    # -- conversions between forms ------------------------------------------------------------
    @torch.no_grad()
    def to_bits_(self, nbits=None):
        """float -> bits at ``nbits`` (slot -> N), or finetune -> bits exactly (nbits ignored).

        From float: ``S = max|W|``, ``R = round(|W| (2^N - 1) / S)``, ``scale = S``
        (docs/method.md, "Float -> bits"). Precision 0 asked for gives a zeroed tensor, at
        precision 1 as in the release (with ``corrections.zero_precision``: at precision 0, as
        does an all-zero tensor).
        From finetune: the code ``round(|clip(w)| (2^N - 1))`` that ``Q_N`` uses, same scale; a
        precision-0 tensor becomes a zero plane at precision 1, as in the release (corrected: 0).
        """
        if self.form == "bits":
            return
        for slot in self.slots:
            if self.form == "float":
                code, scale = quantize(getattr(self, slot), max(nbits[slot], 1))
                nb = nbits[slot] if bool(code.any()) or not self.corrections.zero_precision \
                    else 0
                code = code if nb else torch.zeros_like(code)
            else:
                code, scale, nb = self.code(slot), self.scale_of(slot), self.nbits[slot]
            if not self.corrections.zero_precision:
                nb = max(nb, 1)
            self._install_bits(slot, code, scale.detach().clone(), nb)
        self.form = "bits"

    @torch.no_grad()
    def to_finetune_(self):
        """bits -> finetune, as the release does: ``w = sum_i (p_i - n_i) e_i`` in fp32 (on the
        N-bit grid up to its rounding when the bits are exact), the same scale. A 1-bit tensor
        whose ``w`` is all zero goes to precision 0."""
        if self.form == "finetune":
            return
        for slot in self.slots:
            w, scale = plane_value(*self.planes(slot)), self.scale_of(slot).detach().clone()
            if self.nbits[slot] == 1 and not bool(w.any()):
                self.nbits[slot] = 0
            self._install(slot, {slot: w, NAMES[slot].scale: scale},
                          self._trains("finetune", self.nbits[slot], slot))
        self.form = "finetune"

    @torch.no_grad()
    def to_float_(self):
        """bits or finetune -> float: the weights the forward pass uses, bit for bit (a dropped
        classifier bias included); from bits form, as the release does it unless
        ``corrections.best_float``: ``scale * sum_i (p_i - n_i) e_i``, and a 1-bit tensor that
        is all zero gets precision 0."""
        tensors = {}
        for slot in self.slots:
            if self.form == "bits" and not self.corrections.best_float:
                tensors[slot] = plane_value(*self.planes(slot)) * self.scale_of(slot)
                if self.nbits[slot] == 1 and not bool(tensors[slot].any()):
                    self.nbits[slot] = 0
            elif self.form != "float":
                tensors[slot] = self._build(slot, self.scale_of(slot))
        for slot, tensor in tensors.items():
            self._install(slot, {slot: tensor.detach().clone()})
        self.form = "float"

    @torch.no_grad()
    def requantize_(self, thre=0.0, allowed=()):
        """Re-quantize the bit planes and drop planes (docs/method.md, steps 1-2); bits form.
        ``allowed``: the precisions a tensor may have (sorted), each rounded up to one."""
        assert self.form == "bits", "re-quantization needs the bit representation"
        for slot in self.slots:
            self._install_planes(slot, *self._requantized(slot, thre, allowed))

    @torch.no_grad()
    def requantized_precision(self, thre=0.0, allowed=()):
        """``[N_weight, N_bias]`` that ``requantize_`` would give now; the layer unchanged."""
        return [self._requantized(s, thre, allowed)[3] if s in self.slots else 0
                for s in ("weight", "bias")]

    def _requantized(self, slot, thre, allowed):
        planes = requantize(*self.planes(slot), self.scale_of(slot), self.nbits[slot], thre,
                            self.corrections, bias=slot == "bias")
        width = allowed_width(planes[3], allowed)
        return planes if width == planes[3] else widen(*planes, width)

    @torch.no_grad()
    def plane_norms(self, slot="weight"):
        """The regularizer's group norm of each plane of ``slot``, MSB first:
        ``||(p_i, n_i)||_2`` over the tensor's elements (bits form)."""
        p, n = self.planes(slot)
        return torch.cat((p, n)).reshape(-1, p.shape[-1]).pow(2).sum(0).sqrt().tolist()

    @torch.no_grad()
    def step_down_(self, slot, msb):
        """Drop the MSB or the LSB plane of ``slot`` (``utils.quant.bits.step_down``); bits form
        with exact planes."""
        self._install_planes(slot, *step_down(*self.planes(slot), self.scale_of(slot),
                                              self.nbits[slot], msb))

    @torch.no_grad()
    def settle_(self):
        """What the release does to a bit model it loads, before training on it: drop its empty
        planes, bits left as they are (``utils.quant.bits.drop_planes`` at threshold 0); with
        ``corrections.load_rounding``, re-quantize it at threshold 0 (round, then drop)."""
        assert self.form == "bits", "settling needs the bit representation"
        if self.corrections.load_rounding:
            return self.requantize_(0.0)
        for slot in self.slots:
            if self.nbits[slot]:
                self._install_planes(slot, *drop_planes(*self.planes(slot), self.scale_of(slot),
                                                        self.nbits[slot], 0.0, slot == "bias"))

    # -- what the model-level code reads ------------------------------------------------------
    def precision(self):
        """``[N_weight, N_bias]``, the release's ``Nbit_dict`` entry (N_bias = 0 without bias)."""
        return [self.nbits["weight"], self.nbits.get("bias", 0)]

    def bit_groups(self):
        """``(p, n, N)`` for each slot, the regularizer's groups (bits form)."""
        return [(*self.planes(s), self.nbits[s]) for s in self.slots]

    def clamp_targets(self):
        """The tensors clamped after an optimizer step with ``corrections.clamp``: bit planes, or
        finetune weights ``w`` (the release's choice is by name: ``BitModel.clamp_``)."""
        if self.form == "bits":
            return [t for p, n, nb in self.bit_groups() if nb for t in (p, n)]
        if self.form == "finetune":
            return [getattr(self, s) for s in self.slots if self.nbits[s]]
        return []

    def sizes(self):
        """``[(#elements, N)]`` per slot, for the TP and TB size accounting."""
        return [(torch.Size(self.shapes[s]).numel(), self.nbits[s]) for s in self.slots]

    @torch.no_grad()
    def plane_ones(self, slot="weight"):
        """Percentage of nonzero bits ``p_i - n_i`` in each plane, MSB first (bits form)."""
        if self.nbits[slot] == 0:
            return []
        p, n = self.planes(slot)
        diff = p - n
        return (diff.reshape(-1, diff.shape[-1]) != 0).double().mean(0).mul(100).tolist()

    def extra_repr(self):
        return f"{super().extra_repr()}, form={self.form}, nbits={self.precision()}"


class BitConv2d(BitLayer, nn.Conv2d):
    """``nn.Conv2d`` whose weight (and bias) are BSQ-quantized (see the module docstring)."""

    def __init__(self, *args, nbits=8, corrections=CORRECTED, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_bits(nbits, corrections)

    @classmethod
    def from_conv(cls, conv, nbits=8, corrections=CORRECTED):
        """The bit layer of ``conv``, in float form: every attribute of the convolution (stride,
        padding, dilation, groups, padding mode) and its weight and bias as they are (the same
        parameters). Draws no random numbers."""
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                    conv.padding_mode, device="meta", nbits=nbits, corrections=corrections)
        return layer._adopt(conv)

    def forward(self, x):
        return self._conv_forward(x, self.quantized("weight"), self.quantized("bias"))


class BitLinear(BitLayer, nn.Linear):
    """``nn.Linear`` whose weight and bias are BSQ-quantized (see the module docstring)."""

    def __init__(self, *args, nbits=8, corrections=CORRECTED, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_bits(nbits, corrections)

    @classmethod
    def from_linear(cls, linear, nbits=8, corrections=CORRECTED):
        """The bit layer of ``linear``, in float form, with its weight and bias as they are (the
        same parameters). Draws no random numbers."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    device="meta", nbits=nbits, corrections=corrections)
        return layer._adopt(linear)

    def forward(self, x):
        return F.linear(x, self.quantized("weight"), self.quantized("bias"))
