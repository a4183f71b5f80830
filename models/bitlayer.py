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

Parameter names and shapes are the original release's (``scale`` and ``biasscale`` are 0-dim, as
in every bit checkpoint the release writes), so state dicts move between the two by at most a
``module.`` prefix. Precision 0 marks an all-zero tensor: it keeps one zero plane, outputs zero
and gets no gradient, so it stays zero.
"""
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.bits import encode, plane_value, quantize, requantize
from utils.ste import WeightQuant, levels

FORMS = ("float", "bits", "finetune")


class BitNames(NamedTuple):
    """The release's names of one quantized tensor's parameters: its planes and its scale."""
    p: str
    n: str
    scale: str


NAMES = {"weight": BitNames("pweight", "nweight", "scale"),
         "bias": BitNames("pbias", "nbias", "biasscale")}


class BitLayer:
    """Mixin for a ``nn.Conv2d`` or ``nn.Linear`` whose weight and bias are BSQ-quantized.

    ``self.nbits`` maps ``"weight"``/``"bias"`` to the precision of each present tensor.
    """

    def _init_bits(self, nbits=8):
        self.form = "float"
        self.slots = ("weight",) if self.bias is None else ("weight", "bias")
        self.shapes = {slot: tuple(getattr(self, slot).shape) for slot in self.slots}
        self.nbits = {slot: nbits for slot in self.slots}

    # -- forward ---------------------------------------------------------------------------
    def quantized(self, slot):
        """The tensor the forward pass uses for ``slot`` (None when the layer has no such slot).

        Built in fp32 even under autocast: the plane arithmetic and ``Q_N`` need exact levels.
        """
        if slot not in self.slots:
            return None
        if self.form == "float":
            return getattr(self, slot)
        scale = self.scale_of(slot)
        with torch.autocast(scale.device.type, enabled=False):
            return self._build(slot, scale)

    def _build(self, slot, scale):
        """``scale * Q_N(w)`` with w from the planes (bits form) or the finetune weight."""
        nbits = self.nbits[slot]
        if nbits == 0:
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
    def _install(self, slot, tensors, trainable=True):
        """Replace ``slot``'s parameters, whatever their form, by ``tensors`` (name -> tensor).

        A precision-0 tensor is installed frozen (``trainable=False``): it gets no gradient, so
        optimizers and DistributedDataParallel leave it alone.
        """
        for name in (slot, *NAMES[slot]):
            self._parameters.pop(name, None)
        for name, tensor in tensors.items():
            self.register_parameter(name, nn.Parameter(tensor.contiguous(), trainable))
        if slot not in tensors:
            self.register_parameter(slot, None)

    def _install_bits(self, slot, code, scale, nbits):
        """Install an integer code (slot's shape) at ``nbits`` with a 0-dim ``scale``, bits form."""
        self.nbits[slot] = nbits
        p, n = encode(code, max(nbits, 1), dtype=scale.dtype)
        self._install(slot, dict(zip(NAMES[slot], (p, n, scale))), nbits > 0)

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
            self._install(slot, tensors, form == "float" or nb > 0)
        self.form = form

    # -- conversions between forms ------------------------------------------------------------
    @torch.no_grad()
    def to_bits_(self, nbits=None):
        """float -> bits at ``nbits`` (slot -> N), or finetune -> bits exactly (nbits ignored).

        From float: ``S = max|W|``, ``R = round(|W| (2^N - 1) / S)``, ``scale = S``
        (docs/method.md, "Float -> bits"); an all-zero tensor, or precision 0 asked for, gives a
        zeroed tensor at precision 0.
        From finetune: the code ``round(|clip(w)| (2^N - 1))`` that ``Q_N`` uses, same scale.
        """
        if self.form == "bits":
            return
        for slot in self.slots:
            if self.form == "float":
                code, scale = quantize(getattr(self, slot), max(nbits[slot], 1))
                nb = nbits[slot] if bool(code.any()) else 0
                code = code if nb else torch.zeros_like(code)
            else:
                code, scale, nb = self.code(slot), self.scale_of(slot), self.nbits[slot]
            self._install_bits(slot, code, scale.detach().clone(), nb)
        self.form = "bits"

    @torch.no_grad()
    def to_finetune_(self):
        """bits -> finetune: drop all-zero planes (re-quantize at t = 0), then, as the release
        does, ``w = sum_i (p_i - n_i) e_i`` in fp32 (on the N-bit grid up to its rounding)."""
        if self.form == "finetune":
            return
        self.requantize_(0.0)
        for slot in self.slots:
            w, scale = plane_value(*self.planes(slot)), self.scale_of(slot).detach().clone()
            self._install(slot, {slot: w, NAMES[slot].scale: scale}, self.nbits[slot] > 0)
        self.form = "finetune"

    @torch.no_grad()
    def to_float_(self):
        """bits or finetune -> float: the weights the forward pass uses, bit for bit."""
        tensors = {slot: self.quantized(slot).detach().clone() for slot in self.slots}
        for slot, tensor in tensors.items():
            self._install(slot, {slot: tensor})
        self.form = "float"

    @torch.no_grad()
    def requantize_(self, thre=0.0):
        """Re-quantize the bit planes and drop planes (docs/method.md, steps 1-2); bits form."""
        assert self.form == "bits", "re-quantization needs the bit representation"
        for slot in self.slots:
            p, n, scale, nb = requantize(*self.planes(slot), self.scale_of(slot), self.nbits[slot],
                                         thre)
            self.nbits[slot] = nb
            self._install(slot, dict(zip(NAMES[slot], (p, n, scale))), nb > 0)

    # -- what the model-level code reads ------------------------------------------------------
    def precision(self):
        """``[N_weight, N_bias]``, the release's ``Nbit_dict`` entry (N_bias = 0 without bias)."""
        return [self.nbits["weight"], self.nbits.get("bias", 0)]

    def bit_groups(self):
        """``(p, n, N)`` for each slot, the regularizer's groups (bits form)."""
        return [(*self.planes(s), self.nbits[s]) for s in self.slots]

    def clamp_targets(self):
        """The tensors clamped after an optimizer step: bit planes, or finetune weights ``w``."""
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
    """``nn.Conv2d`` whose weight is BSQ-quantized (see the module docstring)."""

    def __init__(self, *args, nbits=8, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_bits(nbits)

    def forward(self, x):
        return self._conv_forward(x, self.quantized("weight"), self.quantized("bias"))


class BitLinear(BitLayer, nn.Linear):
    """``nn.Linear`` whose weight and bias are BSQ-quantized (see the module docstring)."""

    def __init__(self, *args, nbits=8, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_bits(nbits)

    def forward(self, x):
        return F.linear(x, self.quantized("weight"), self.quantized("bias"))
