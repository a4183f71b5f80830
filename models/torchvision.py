"""torchvision's classification networks by name: ``-a resnet18``, ``-a torchvision.vgg16_bn``.

Every model ``torchvision.models.get_model`` builds for classification (``resnet18``,
``resnet50``, ``mobilenet_v2``, ``inception_v3``, ``efficientnet_b0``, ``vit_b_16``, ...) is an
architecture here, built with random weights (``weights=None``) and turned into a bit network by
the one swap, like every registry entry; a pretrained float model comes in as torchvision's
weight file (``convert.py --model FILE``, a bare state dict). Its spelling is
``torchvision.NAME``; ``NAME`` alone also works where the release's CIFAR registry has no
network of that name (``alexnet``, ``vgg11`` .. ``vgg19_bn`` are the release's CIFAR ones).
Checkpoints record ``torchvision.NAME``.

What differs from ``get_model(NAME)``, and why:

- ``inception_v3`` and ``googlenet`` are built as torchvision builds them with its ImageNet
  weights (``transform_input=True``, which those weights expect), less the auxiliary
  classifiers (``aux_logits=False``): BSQ trains and quantizes the main network alone, and the
  auxiliary heads' weights in torchvision's files (``AuxLogits.*``, ``aux1.*``, ``aux2.*``) are
  dropped when loading.
- In the ResNet family (``resnet*``, ``resnext*``, ``wide_resnet*``) the 1x1 shortcut convs
  (``*.downsample.*``) stay float and count nowhere, as in the release's quantized ResNet.

The activation rule is the swap's (``models/swap.py``): every ReLU / ReLU6 call site but the
stem's gets its own quantizer; other activations (SiLU, GELU, Hardswish) stay float.
"""
import fnmatch

import torch

from .registry import Arch
from .swap import SHORTCUTS

PREFIX = "torchvision."
SIZE = {"inception_v3": 299}  # the input size a network is made for, where not 224
BUILD = {"inception_v3": {"aux_logits": False, "transform_input": True, "init_weights": True},
         "googlenet": {"aux_logits": False, "transform_input": True, "init_weights": True}}
FOREIGN = {"inception_v3": ("AuxLogits.*",), "googlenet": ("aux1.*", "aux2.*")}
RESNETS = ("resnet*", "resnext*", "wide_resnet*")

_ARCHS = {}  # name -> Arch, one per process


def names():
    """The classification models ``torchvision.models.get_model`` builds."""
    from torchvision import models  # 2 s to import: only when a torchvision network is asked for

    return models.list_models(module=models)


def torchvision_arch(name):
    """The ``Arch`` of ``-a name`` (``torchvision.NAME`` or ``NAME``); None when torchvision has
    no classification model of that name."""
    model = name.removeprefix(PREFIX)
    if model not in _ARCHS:
        if model not in names():
            return None
        size = SIZE.get(model, 224)
        _ARCHS[model] = Arch(
            PREFIX + model, _builder(model), about=f"torchvision's {model}",
            float_layers=(SHORTCUTS,) if _matches(model, RESNETS) else (),
            describe=describe, input_size=(3, size, size),
            foreign_keys=FOREIGN.get(model, ()), check_input=_input_check(model))
    return _ARCHS[model]


def _builder(model):
    def build(num_classes):
        from torchvision import models

        return models.get_model(model, weights=None, num_classes=num_classes,
                                **BUILD.get(model, {}))
    return build


def _input_check(model):
    def check(num_classes, shape):
        """``ValueError`` unless the network takes ``(C, H, W) = shape`` inputs (a forward pass
        on the meta device: no memory, no arithmetic)."""
        from torchvision import models

        with torch.device("meta"):
            net = models.get_model(model, weights=None, num_classes=num_classes,
                                   **BUILD.get(model, {}))
            try:
                for training in (True, False):
                    net.train(training)(torch.empty(2, *shape))
            except (RuntimeError, ValueError, AssertionError) as e:
                size = "x".join(map(str, shape))
                raise ValueError(f"-a {PREFIX}{model} cannot take {size} images "
                                 f"({' '.join(str(e).split())[:150]}): give it larger ones (-d "
                                 "imagenet, --train-crop-size / --val-crop-size)") from None
    return check


def describe(state):
    """``{"num_classes"}`` of a torchvision state dict: the rows of its last 2-d weight, the
    classifier's (None when it has none)."""
    last = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return {"num_classes": last[-1].shape[0] if last else None}


def _matches(name, patterns):
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)
