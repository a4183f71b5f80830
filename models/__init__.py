"""Bit-representation layers and the CIFAR ResNet of BSQ."""
from utils.checkpoint import load_checkpoint, load_model_state

from .bitlayer import BitConv2d, BitLayer, BitLinear
from .bitmodel import BitModel
from .resnet import ResNet, resnet

__all__ = ["ARCHS", "BitConv2d", "BitLayer", "BitLinear", "BitModel", "ResNet", "build_model",
           "load_model", "resnet"]
ARCHS = {"resnet": resnet}


def build_model(args, num_classes):
    """The network the flags describe, in float form, on the CPU."""
    return ARCHS[args.arch](depth=args.depth, num_classes=num_classes, act=args.act)


def load_model(path, args, num_classes):
    """Build the model the flags describe and load checkpoint ``path`` (any form) into it.

    Returns ``(model, checkpoint)``; raises ``CheckpointError`` with a one-line message.
    """
    ckpt = load_checkpoint(path)
    return load_model_state(build_model(args, num_classes), ckpt, path), ckpt
