"""Everything that knows networks: bit layers, the one swap that makes any network a bit network,
the architectures by name, loading a model's state, and the model-level exports.

    model = build_model("vgg16_bn", num_classes=10, act=4)     # a BitModel in float form
    model = build_model("torchvision.resnet50", 1000, act=4)   # torchvision's, the same way
    model.to_bits_(8)                                           # 8-bit bit representation
    model, ckpt = load_model("checkpoint.pth.tar")              # the network it records

``to_bit_layers_`` and ``quantize_activations_`` (``swap.py``) and ``make_bit_model``
(``bitmodel.py``) are the swap itself, for a network built in Python.
"""
from . import cifar  # noqa: F401  (registers the release's CIFAR networks)
from .bitlayer import BitConv2d, BitLayer, BitLinear
from .bitmodel import BitModel, make_bit_model
from .build import build_model
from .flags import arch_title, input_defaults, model_config, model_flags
from .registry import ARCHS, Arch, ArchError, ReleasePolicy, network_flags, register
from .resolve import get_arch
from .state import load_model, load_model_state, recorded_config
from .swap import quantize_activations_, to_bit_layers_

__all__ = ["ARCHS", "Arch", "ArchError", "BitConv2d", "BitLayer", "BitLinear", "BitModel",
           "ReleasePolicy", "arch_title", "build_model", "get_arch", "input_defaults",
           "load_model", "load_model_state", "make_bit_model", "model_config", "model_flags",
           "network_flags", "quantize_activations_", "recorded_config", "register",
           "to_bit_layers_"]
