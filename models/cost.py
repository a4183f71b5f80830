"""Bit-operations (BOPs): what one image's forward pass costs, counted per conv and linear.

Each conv and linear (quantized or float) has its multiply-accumulates per image (MACs), measured
with one forward pass of an image of the data's size; its weight precision (the quantized
layer's, or 32 for a float layer and in float form); and its input activations' precision: that
of the activation quantizer whose output it takes, found in the forward pass's ``torch.fx``
graph through the operations that keep the values' precision (reshapes, dropout, pooling), and
32 otherwise (the image, a float activation, a sum of branches, or a forward pass that cannot be
traced). ``BOPs = sum over layers of MACs x weight bits x activation bits``, as HAWQ-V3 counts.
"""
import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.quant.bits import FLOAT_BITS

from .activation import ActQuantizer
from .swap import TraceError, trace

# What passes its input's precision on: a layer fed through these takes the quantizer's
KEEPS_PRECISION = {
    "call_module": (nn.Flatten, nn.Dropout, nn.Identity, nn.MaxPool2d, nn.AvgPool2d,
                    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d),
    "call_function": (torch.flatten, torch.reshape, F.dropout, F.max_pool2d, F.avg_pool2d,
                      F.adaptive_avg_pool2d, F.adaptive_max_pool2d, operator.getitem),
    "call_method": ("view", "flatten", "reshape", "contiguous"),
}


def layer_macs(model, shape):
    """``{name: MACs}`` of each conv and linear of ``model`` for one image of ``shape`` (C, H, W),
    in the order the forward pass calls them; one eval-mode pass of a zero image, without
    gradient, changing no state and drawing no random numbers."""
    macs, handles = {}, []

    def count(name):
        def hook(module, inputs, out):
            per_output = (module.in_channels // module.groups * module.kernel_size[0]
                          * module.kernel_size[1]) if isinstance(module, nn.Conv2d) \
                else module.in_features
            macs[name] = macs.get(name, 0) + out[0].numel() * per_output  # out: (1, ...)
        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            handles.append(module.register_forward_hook(count(name)))
    was, device = model.training, next(model.parameters()).device
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape, device=device))
    finally:
        model.train(was)
        for handle in handles:
            handle.remove()
    return macs


def input_bits(model):
    """``{name: bits}`` of the input activations of each conv and linear: the precision of the
    activation quantizer it takes its input from (through ``KEEPS_PRECISION``), else 32."""
    try:
        graph = trace(model, training=False, consequence="so every layer's input is counted "
                                                         "at 32 bits")
    except TraceError:
        return {}
    bits = {}
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(model.get_submodule(node.target),
                                                   (nn.Conv2d, nn.Linear)):
            bits[node.target] = _precision(node.args[0], model)
    return bits


def _precision(node, model):
    """The precision of the values ``node`` gives: its quantizer's, through ``KEEPS_PRECISION``."""
    while isinstance(node, torch.fx.Node):
        if node.op == "call_module":
            module = model.get_submodule(node.target)
            if isinstance(module, ActQuantizer):
                return module.act or FLOAT_BITS
            if not isinstance(module, KEEPS_PRECISION["call_module"]):
                return FLOAT_BITS
        elif node.op not in ("call_function", "call_method") \
                or node.target not in KEEPS_PRECISION[node.op]:
            return FLOAT_BITS
        node = node.args[0] if node.args else None
    return FLOAT_BITS
