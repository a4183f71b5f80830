"""Model-level BSQ operations over every bit layer of a network, whatever the network."""
import contextlib
import functools

import torch

from utils.quant.bits import FLOAT_BITS, clamp_
from utils.quant.corrections import CORRECTED
from utils.quant.regularizer import bit_group_lasso

from .bitlayer import FORMS, BitLayer
from .cost import input_bits, layer_macs

CLAMP = {"bits": (0.0, 2.0), "finetune": (-1.0, 1.0)}  # docs/method.md: after every step


class BitModel:
    """The model-level BSQ operations over every bit layer of a network: forms, scheme, size
    accounting (TP, TB, compression), regularizer, re-quantization, clamp.

    A mixin: ``make_bit_model`` gives a network these methods by making its class a subclass of
    both (the way ``torch.nn.utils.parametrize`` re-classes a module), so the network keeps its
    own forward, module tree and parameter names. Layers that are not ``BitLayer``s (BatchNorm,
    float convs such as the release ResNet's shortcuts, activation quantizers) take no part in the
    accounting or the regularizer.

    Attributes set by ``make_bit_model``: ``corrections`` (``utils.quant.corrections``),
    ``arch_spec`` (what rebuilds the network: ``{"arch", "num_classes", "act", **its flags}``)
    and ``release_clamp`` (the release's clamp by parameter name, or None); ``input_shape``, the
    ``(C, H, W)`` of one image its bit-operations are counted for (``models/build.py`` and
    ``load_model`` set it to the network's or the data's); ``allowed_bits`` (``--allowed-bits``).
    """

    corrections = CORRECTED
    arch_spec = {}
    release_clamp = None
    input_shape = (3, 32, 32)
    allowed_bits = ()  # the precisions re-quantization may give (sorted), or any

    def quant_layers(self):
        """``[(name, layer)]`` of the quantized layers, in module order."""
        return [(name, m) for name, m in self.named_modules() if isinstance(m, BitLayer)]

    @property
    def form(self):
        """``"float"``, ``"bits"`` or ``"finetune"``: the form all quantized layers share."""
        return self.quant_layers()[0][1].form

    def activation_report(self):
        """Each activation call site of the forward pass (train mode), in order: ``{"site",
        "kind", "bits", "why"}``, ``bits`` the precision of its quantizer or None where it stays
        float, ``why`` the reason then; [] when the network's activations were left as they are
        (``--act 0``, or a forward pass that was not traced)."""
        act = self.arch_spec.get("act", 0)
        rows = []
        for row in getattr(self, "activation_sites", None) or []:
            float_why = row["why"] or (None if act else "--act 0: no quantizer")
            rows.append({"site": row["site"], "kind": row["kind"],
                         "bits": None if float_why else act, "why": float_why})
        return rows

    def scheme(self):
        """``{layer_name: [N_weight, N_bias]}``, the release's ``Nbit_dict``."""
        return {name: m.precision() for name, m in self.quant_layers()}

    @contextlib.contextmanager
    def frozen_weights(self):
        """Within the context, each quantized layer's forward uses its weight and bias built once
        from its planes (or finetune weights) on entry, not once per batch: for a test pass,
        where nothing changes them. The same tensors, so the same results; without gradient."""
        layers = [m for _, m in self.quant_layers()]
        with torch.no_grad():
            for m in layers:
                m.frozen = {slot: m.quantized(slot) for slot in m.slots}
        try:
            yield self
        finally:
            for m in layers:
                m.frozen = None

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
        """Re-quantize and drop planes in every layer (docs/method.md, steps 1-2), each precision
        then rounded up to one of ``allowed_bits`` when it is set."""
        for _, m in self.quant_layers():
            m.requantize_(thre, self.allowed_bits)

    def requantized_scheme(self, thre=0.0):
        """The scheme ``requantize_(thre)`` would give now, the model unchanged (a dry run)."""
        return {name: m.requantized_precision(thre, self.allowed_bits)
                for name, m in self.quant_layers()}

    def meet_(self, over):
        """Drop planes until ``over(self)`` is False (a budget a re-quantization left unmet):
        each time, the layer whose weight can step down to the next precision below (the next
        of ``allowed_bits``; at least 1 bit) by dropping the planes of the smallest sum of group
        norms (the regularizer's, divided by the square root of the tensor's size so that
        layers of every size compare: for exact bits, the square root of the plane's share of
        ones), each the MSB or the LSB plane, whichever is smaller (``BitLayer.step_down_``).
        Returns the number of planes dropped (0 when no layer can step down further)."""
        dropped = 0
        while over(self):
            best = None
            for _, m in self.quant_layers():
                nbits = m.nbits["weight"]
                below = [a for a in (self.allowed_bits or range(1, nbits)) if 1 <= a < nbits]
                if not below:
                    continue
                size = m.sizes()[0][0] ** 0.5
                norms = [norm / size for norm in m.plane_norms("weight")]
                plan, cost = [], 0.0
                for _ in range(nbits - max(below)):
                    plan.append(norms[0] <= norms[-1])  # True: the MSB plane
                    cost += norms[0] if plan[-1] else norms[-1]
                    norms = norms[1:] if plan[-1] else norms[:-1]
                if best is None or cost < best[0]:
                    best = (cost, m, plan)
            if best is None:
                return dropped
            for msb in best[2]:
                best[1].step_down_("weight", msb)
                dropped += 1
        return dropped

    def settle_(self):
        """What the release does to a loaded bit model before training: drop empty planes (or,
        with ``corrections.load_rounding``, re-quantize at threshold 0); see ``BitLayer``."""
        for _, m in self.quant_layers():
            m.settle_()

    def size(self, scheme=None):
        """``(TP, TB)``: quantized weights (classifier bias included) and their bits, at the
        model's precisions or at ``scheme``'s (``{name: [N_w, N_b]}``).

        In float form (without ``scheme``) every weight counts 32 bits.
        """
        sizes = [(numel, scheme[name][i] if scheme else nbits)
                 for name, m in self.quant_layers() for i, (numel, nbits) in enumerate(m.sizes())]
        total = sum(numel for numel, _ in sizes)
        if self.form == "float" and scheme is None:
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

    def costs(self, scheme=None):
        """Each conv and linear's bit-operations for one image of ``input_shape``, in forward
        order (``models/cost.py``): ``[{"layer", "macs", "weight_bits", "act_bits", "bops",
        "quantized"}]``, ``weight_bits`` the layer's precision, or ``scheme``'s (32 in float form
        and for a float layer). The MACs and input precisions, which no training changes, are
        measured once."""
        shape = tuple(self.input_shape)
        if getattr(self, "_measured", (None,))[0] != shape:
            self._measured = (shape, layer_macs(self, shape), input_bits(self))
        _, macs, act_bits = self._measured
        rows = []
        for name, count in macs.items():
            module = self.get_submodule(name)
            quantized = isinstance(module, BitLayer)
            if quantized and scheme is not None:
                weight_bits = scheme[name][0]
            elif quantized and module.form != "float":
                weight_bits = module.precision()[0]
            else:
                weight_bits = FLOAT_BITS
            act = act_bits.get(name, FLOAT_BITS)
            rows.append({"layer": name, "macs": count, "weight_bits": weight_bits,
                         "act_bits": act, "bops": count * weight_bits * act,
                         "quantized": quantized})
        return rows

    def bops(self, scheme=None):
        """Bit-operations of one image's forward pass: ``sum(MACs x weight bits x activation
        bits)`` over every conv and linear (``costs``), at ``scheme`` when given."""
        return sum(row["bops"] for row in self.costs(scheme))

    def regularizer(self):
        """``B`` of Eq. 5 over the bit planes (bits form): the loss is ``CE + alpha * B / TP``."""
        return bit_group_lasso([g for _, m in self.quant_layers() for g in m.bit_groups()])

    def clamp_(self):
        """After an optimizer step, bits form to [0, 2] and finetune form to [-1, 1]: the bit
        planes or the finetune weights ``w`` (the rule by role), or, on the release's own network
        without ``corrections.clamp``, the parameters its name rule chooses
        (``release_clamp``)."""
        form = self.form
        if form not in CLAMP:
            return
        if self.corrections.clamp or self.release_clamp is None:
            targets = [t for _, m in self.quant_layers() for t in m.clamp_targets()]
        else:
            targets = [p for name, p in self.named_parameters() if self.release_clamp(name, form)]
        clamp_(targets, *CLAMP[form])


def make_bit_model(net, arch_spec=None, corrections=CORRECTED, release_clamp=None, forward=None):
    """``net`` (whose layers ``models/swap.py`` made bit layers) as a ``BitModel``, in place.

    Its class becomes ``Bit<Class>``, a subclass of ``BitModel`` and of its own class, whose
    ``forward`` is ``forward`` when given (the rewired forward of ``quantize_activations_``).
    ``corrections``: the method (``CORRECTED``) unless given, as for ``to_bit_layers_``, whose
    layers carry their own; ``release_clamp``: the release network's clamp by parameter name,
    used without ``corrections.clamp``. Returns ``net``.
    """
    base = type(net)
    net.__class__ = _bit_class(base) if forward is None else type(
        f"Bit{base.__name__}", (BitModel, base), {"forward": forward, "__module__": __name__})
    net.corrections, net.release_clamp = corrections, release_clamp
    net.arch_spec = dict(arch_spec or {})
    return net


@functools.lru_cache(maxsize=None)
def _bit_class(base):
    return type(f"Bit{base.__name__}", (BitModel, base), {"__module__": __name__})
