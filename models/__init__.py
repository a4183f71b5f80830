"""Bit-representation layers and the CIFAR ResNet of BSQ."""
from .bitlayer import BitConv2d, BitLayer, BitLinear
from .bitmodel import BitModel
from .resnet import ResNet, resnet

ARCHS = {"resnet": resnet}
