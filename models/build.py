"""``build_model``: a registry entry's float network turned into a bit network by the one swap.

1. The entry builds its float network (``models/registry.py``), drawing its initial weights.
2. Every conv and linear becomes a bit layer, in float form (``to_bit_layers_``), except the
   entry's ``float_layers``; no random numbers are drawn.
3. Every activation call site but the stem's gets a quantizer (``quantize_activations_``):
   ReLU6 and the per-batch max-scaled quantizer for ``--act`` 4..8, PACT for 1..3, none for 0.
4. The network becomes a ``BitModel`` (``make_bit_model``).

The method is computed on every network. The release quantized one network, its CIFAR ResNet,
and three of the things it computes otherwise belong to that network itself: its clamp by
parameter name, its finetune form without the classifier bias, and ``--act 0`` as PACT clipping
without a quantizer. They are its registry entry's ``ReleasePolicy``, applied unless
``corrections`` turn them off (``--corrected``); an entry without a policy computes the method
whatever ``corrections`` say of them, since the release has no behaviour to follow there.
``--act 0`` then leaves the activations as they are.
"""
from dataclasses import replace

import torch

from utils.quant.corrections import CORRECTED

from .activation import ActQuantizer
from .bitmodel import make_bit_model
from .registry import ArchError, network_flags
from .resolve import get_arch
from .swap import quantize_activations_, to_bit_layers_


def build_model(arch="resnet", num_classes=10, act=4, corrections=CORRECTED, **flags):
    """The network ``arch`` (a registry name or ``file.py:factory``) as a ``BitModel`` in float
    form, on the CPU, with the model ``flags`` it reads (``depth``, ``widen_factor``, ...: left
    out or None, the entry's defaults); other keyword arguments go to the entry's builder as they
    are (VGG's ``width``, a channel multiplier, for quick experiments and tests). Raises
    ``ArchError`` naming a flag that does not fit the architecture, ``TraceError`` for a forward
    pass ``torch.fx`` cannot trace."""
    entry = get_arch(arch)
    declared = {flag.dest for flag in network_flags()}
    extras = {k: flags.pop(k) for k in list(flags) if k not in declared}
    config = {**entry.config(flags), **extras}
    policy = entry.policy
    if policy is None:  # the release's network-level behaviours exist on its own network only
        corrections = replace(corrections, clamp=True, fc_bias=True)
    try:
        net = entry.build(num_classes=num_classes, **config)
    except TypeError as e:
        if not extras:
            raise
        raise ArchError(f"-a {entry.name} does not take {', '.join(extras)} ({e})") from None
    to_bit_layers_(net, exclude=entry.float_layers, corrections=corrections)
    forward = None
    if act or (policy is not None and policy.act0_clips):
        forward = quantize_activations_(net, lambda: ActQuantizer(act))
    spec = {"arch": entry.name, **config, "num_classes": num_classes, "act": act}
    model = make_bit_model(net, spec, corrections, policy and policy.clamp, forward)
    if entry.input_size is not None:
        model.input_shape = entry.input_size
    return model


def check_network(model, shapes):
    """One forward pass of a batch of two zero images of each shape ``(C, H, W)`` in ``shapes``,
    in eval mode and without gradient: the network takes the data's images and gives one logit
    per class of its ``num_classes``. ``ArchError`` naming the mismatch and the fix. Changes no
    state and draws no random numbers, so a run is the same with it."""
    spec, was = model.arch_spec, model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        for shape in shapes:
            size = "x".join(str(n) for n in shape[1:])
            try:
                with torch.no_grad():
                    logits = model(torch.zeros(2, *shape, device=device))
            except (RuntimeError, ValueError, IndexError, TypeError) as e:
                reason = " ".join(f"{type(e).__name__}: {e}".split())[:160]
                raise ArchError(f"-a {spec['arch']} cannot run on the data's {size} images "
                                f"({reason}): pick a network made for them, or the data set "
                                "(-d) it was made for") from None
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            if got != (2, spec["num_classes"]):
                raise ArchError(f"-a {spec['arch']} gives outputs of shape {got} for 2 images, "
                                f"not (2, {spec['num_classes']}) for the data's "
                                f"{spec['num_classes']} classes: build it with num_classes "
                                "outputs (a factory must use its num_classes argument)")
    finally:
        model.train(was)
