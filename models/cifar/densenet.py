"""DenseNet-BC for 32x32 inputs (the release's ``models/cifar/densenet.py``): a 3x3 stem conv of
``2 x --growthRate`` channels, three dense blocks of bottlenecks (BatchNorm, ReLU, 1x1 conv to
4 x growth, BatchNorm, ReLU, 3x3 conv to growth, dropout ``--drop``, concatenated to the input),
two transitions (BatchNorm, ReLU, 1x1 conv dividing the channels by ``--compressionRate``, 2x2
average pooling), BatchNorm, ReLU, 8x8 average pooling and a linear classifier. Depth ``3n + 4``
with ``(depth - 4) // 6`` bottlenecks per block, as the release computes it.

Layer names, order and initialisation are the release's: convs N(0, sqrt(2 / (k*k*out))),
BatchNorm (1, 0), the classifier PyTorch's default. Each module's ReLU is called twice in a
bottleneck, each call quantized on its own (``models/swap.py``).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.cli.flags import Flag

from ..registry import Arch, register


class Bottleneck(nn.Module):
    def __init__(self, inplanes, expansion=4, growthRate=12, dropRate=0.0):
        super().__init__()
        planes = expansion * growthRate
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, growthRate, kernel_size=3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.dropRate = dropRate

    def forward(self, x):
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        if self.dropRate > 0:
            out = F.dropout(out, p=self.dropRate, training=self.training)
        return torch.cat((x, out), 1)


class Transition(nn.Module):
    def __init__(self, inplanes, outplanes):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, outplanes, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return F.avg_pool2d(self.conv1(self.relu(self.bn1(x))), 2)


class DenseNet(nn.Module):
    def __init__(self, depth=100, dropRate=0.0, num_classes=10, growthRate=12,
                 compressionRate=2):
        super().__init__()
        n = blocks_per_stage(depth)
        self.growthRate, self.dropRate = growthRate, dropRate
        self.inplanes = growthRate * 2
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, padding=1, bias=False)
        self.dense1 = self._dense_block(n)
        self.trans1 = self._transition(compressionRate)
        self.dense2 = self._dense_block(n)
        self.trans2 = self._transition(compressionRate)
        self.dense3 = self._dense_block(n)
        self.bn = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(self.inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _dense_block(self, blocks):
        layers = []
        for _ in range(blocks):
            layers.append(Bottleneck(self.inplanes, growthRate=self.growthRate,
                                     dropRate=self.dropRate))
            self.inplanes += self.growthRate
        return nn.Sequential(*layers)

    def _transition(self, compressionRate):
        inplanes, self.inplanes = self.inplanes, self.inplanes // compressionRate
        return Transition(inplanes, self.inplanes)

    def forward(self, x):
        x = self.trans1(self.dense1(self.conv1(x)))
        x = self.dense3(self.trans2(self.dense2(x)))  # (B, C, 8, 8)
        x = self.avgpool(self.relu(self.bn(x)))
        return self.fc(x.view(x.size(0), -1))  # (B, num_classes)


def blocks_per_stage(depth):
    if depth < 10 or (depth - 4) % 3 or (depth - 4) // 6 < 1:
        raise ValueError(f"--depth {depth} is not 3n+4 with at least one bottleneck per block, "
                         "which -a densenet needs (10, 16, 22, 40, 100, ...)")
    return (depth - 4) // 6


def check(flags):
    blocks_per_stage(flags["depth"])
    for flag in ("growthRate", "compressionRate"):
        if flags[flag] < 1:
            raise ValueError(f"--{flag} {flags[flag]} is not >= 1")


register(Arch("densenet", lambda num_classes, depth, growthRate, compressionRate, drop: DenseNet(
    depth, drop, num_classes, growthRate, compressionRate),
    flags=(
        Flag("depth", int, 100, "3n+4", lo=1),
        Flag("growthRate", int, 12, "growth rate", lo=1),
        Flag("compressionRate", int, 2, "channel division at each transition", lo=1),
        Flag("drop", float, 0.0, "dropout rate", lo=0, hi=1, hi_open=True,
             names=("--drop", "--dropout"))),
    check=check, about="DenseNet-BC",
    title=lambda f: f"DenseNet-BC-{f['depth']} (k={f['growthRate']})"))
