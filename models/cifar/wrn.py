"""Wide ResNet for 32x32 inputs (the release's ``models/cifar/wrn.py``): a 3x3 stem conv, three
groups of pre-activation blocks of widths 16k/32k/64k (``--widen-factor`` k) with dropout
(``--drop``) between their convs, BatchNorm, ReLU, 8x8 average pooling and a linear classifier.
Depth ``6n + 4``.

Layer names, order and initialisation are the release's: convs N(0, sqrt(2 / (k*k*out))),
BatchNorm (1, 0), the classifier's bias 0 (its weight PyTorch's default).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.cli.flags import Flag

from ..registry import Arch, register


class BasicBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride, drop=0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1,
                               bias=False)
        self.droprate = drop
        self.equalInOut = in_planes == out_planes
        self.convShortcut = None if self.equalInOut else nn.Conv2d(
            in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)

    def forward(self, x):
        pre = self.relu1(self.bn1(x))  # the shortcut conv, when there is one, sees it too
        out = self.relu2(self.bn2(self.conv1(pre)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(pre), out)


class NetworkBlock(nn.Module):
    def __init__(self, blocks, in_planes, out_planes, stride, drop=0.0):
        super().__init__()
        self.layer = nn.Sequential(*[
            BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1,
                       drop) for i in range(blocks)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth=28, num_classes=10, widen_factor=4, drop=0.0):
        super().__init__()
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        n = blocks_per_group(depth)
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, drop)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, drop)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, drop)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes)
        self.nChannels = widths[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))  # (B, 64 k, 8, 8)
        out = F.avg_pool2d(self.relu(self.bn1(out)), 8)
        return self.fc(out.view(-1, self.nChannels))  # (B, num_classes)


def blocks_per_group(depth):
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"--depth {depth} is not 6n+4, which -a wrn needs (10, 16, 22, 28, 40, "
                         "...)")
    return (depth - 4) // 6


def check(flags):
    blocks_per_group(flags["depth"])
    if flags["widen_factor"] < 1:
        raise ValueError(f"--widen-factor {flags['widen_factor']} is not >= 1")


register(Arch("wrn", lambda num_classes, depth, widen_factor, drop: WideResNet(
    depth, num_classes, widen_factor, drop), flags=(
        Flag("depth", int, 28, "6n+4", lo=1),
        Flag("widen_factor", int, 4, "width multiplier", lo=1),
        Flag("drop", float, 0.0, "dropout rate", lo=0, hi=1, hi_open=True,
             names=("--drop", "--dropout"))),
    check=check, about="Wide ResNet",
    title=lambda f: f"WRN-{f['depth']}-{f['widen_factor']}"))
