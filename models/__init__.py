"""Bit-representation layers and the CIFAR ResNet of BSQ."""
from utils.checkpoint import load_checkpoint, load_model_state
from utils.corrections import RELEASE

from .bitlayer import BitConv2d, BitLayer, BitLinear
from .bitmodel import BitModel
from .resnet import ResNet, resnet

__all__ = ["ARCHS", "BitConv2d", "BitLayer", "BitLinear", "BitModel", "ResNet", "build_model",
           "load_model", "resnet"]
ARCHS = {"resnet": resnet}


def build_model(arch="resnet", depth=20, num_classes=10, act=4, corrections=RELEASE):
    """The network ``arch``, in float form, on the CPU, computing as the release does except for
    ``corrections``."""
    return ARCHS[arch](depth=depth, num_classes=num_classes, act=act, corrections=corrections)


def load_model(path=None, checkpoint=None, partial=False, **config):
    """``build_model(**config)`` with the checkpoint at ``path`` (any form, ours or the
    release's) loaded into it; ``checkpoint``: that file already read; ``partial``: see
    ``load_model_state``. Without a path, the freshly initialised model. Returns ``(model,
    checkpoint)``; raises ``CheckpointError``."""
    model = build_model(**config)
    if not path:
        return model, None
    checkpoint = checkpoint if checkpoint is not None else load_checkpoint(path)
    return load_model_state(model, checkpoint, path, partial), checkpoint
