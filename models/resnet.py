"""CIFAR ResNet (depth 6n+2, BasicBlock) with BSQ-quantized convs and classifier."""
import math

import torch.nn as nn

from utils.arch import blocks_per_stage
from utils.corrections import RELEASE

from .activation import ActQuantizer
from .bitlayer import BitConv2d, BitLinear
from .bitmodel import BitModel


class BasicBlock(nn.Module):
    """Two quantized 3x3 convs, each followed by BatchNorm and an activation quantizer.

    The 1x1 stride-2 shortcut conv (``downsample.0``) and every BatchNorm stay float.
    """

    def __init__(self, inplanes, planes, stride, act, nbits, corrections):
        super().__init__()
        shortcut = None  # built first, as in the release, so that initialisation draws the same
        if stride != 1 or inplanes != planes:  # random numbers in the same order
            shortcut = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        quantized = {"bias": False, "nbits": nbits, "corrections": corrections}
        self.conv1 = BitConv2d(inplanes, planes, 3, stride, 1, **quantized)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = BitConv2d(planes, planes, 3, 1, 1, **quantized)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu1 = ActQuantizer(act)  # registered after the convs, as in the release, so that
        self.relu2 = ActQuantizer(act)  # parameters (PACT alphas) and optimizer states line up
        self.downsample = shortcut

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + shortcut)


class ResNet(BitModel):
    """ResNet-(6n+2) for 32x32 inputs: stem, three stages of widths 16/32/64, pool, classifier.

    The stem's ReLU is plain and unquantized. Layers start in float form; the scripts convert
    them (``to_bits_``, ``to_finetune_``, ...) or load a checkpoint of another form.
    ``corrections`` (``utils/corrections.py``) is what the layers compute otherwise than the
    release. Initialisation draws the release's random numbers in the release's order.
    """

    def __init__(self, depth=20, num_classes=10, act=4, nbits=8, corrections=RELEASE):
        super().__init__()
        n = blocks_per_stage(depth)
        self.depth, self.num_classes, self.act = depth, num_classes, act
        self.corrections = corrections
        self.conv1 = BitConv2d(3, 16, 3, 1, 1, bias=False, nbits=nbits, corrections=corrections)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        widths, inplanes, stages = (16, 32, 64), 16, []
        for i, width in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(inplanes, width, stride, act, nbits, corrections))
                inplanes = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AvgPool2d(8)
        self.fc = BitLinear(64, num_classes, nbits=nbits, corrections=corrections)

        for m in self.modules():
            if isinstance(m, BitConv2d):  # the shortcut convs keep nn.Conv2d's initialisation
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 16, 32, 32)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 64, 8, 8)
        return self.fc(self.avgpool(x).flatten(1))  # (B, num_classes)


def resnet(**kwargs):
    """The release's ``-a resnet`` entry: ``resnet(depth=20, num_classes=10, act=4,
    corrections=RELEASE)``."""
    return ResNet(**kwargs)
