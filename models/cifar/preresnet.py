"""Pre-activation ResNet for 32x32 inputs (the release's ``models/cifar/preresnet.py``): a 3x3
stem conv, three stages of widths 16/32/64 (x4 with Bottleneck blocks) whose blocks run
BatchNorm -> ReLU -> conv, a final BatchNorm and ReLU, 8x8 average pooling and a linear
classifier. Depth ``6n + 2`` with BasicBlocks, ``9n + 2`` with Bottlenecks (``--block-name``).

Layer names, order and initialisation are the release's: convs N(0, sqrt(2 / (k*k*out))),
BatchNorm (1, 0), the classifier PyTorch's default. Each block's ReLU module is called two
(three) times, so each call gets its own activation quantizer (``models/swap.py``).
"""
import math

import torch.nn as nn

from utils.cli.flags import Flag

from ..registry import Arch, register
from .resnet import conv3x3

BLOCKS = {"basicblock": ("BasicBlock", 6), "bottleneck": ("Bottleneck", 9)}  # depth = k*n + 2


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        return out + (x if self.downsample is None else self.downsample(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + (x if self.downsample is None else self.downsample(x))


class PreResNet(nn.Module):
    def __init__(self, depth=110, num_classes=10, block_name="BasicBlock"):
        super().__init__()
        block = BasicBlock if block_name.lower() == "basicblock" else Bottleneck
        n = blocks_per_stage(depth, block_name)
        self.inplanes = 16
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1, bias=False)
        self.layer1 = self._stage(block, 16, n)
        self.layer2 = self._stage(block, 32, n, stride=2)
        self.layer3 = self._stage(block, 64, n, stride=2)
        self.bn = nn.BatchNorm2d(64 * block.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _stage(self, block, planes, blocks, stride=1):
        downsample = None  # built first, as in the release: the same random draws
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion,
                                                 kernel_size=1, stride=stride, bias=False))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))  # (B, 64 e, 8, 8)
        x = self.avgpool(self.relu(self.bn(x)))
        return self.fc(x.view(x.size(0), -1))  # (B, num_classes)


def blocks_per_stage(depth, block_name="BasicBlock"):
    """``n`` of a PreResNet of ``depth``; ``ValueError`` naming the rule."""
    name, k = BLOCKS[block_name.lower()]
    if depth < k + 2 or (depth - 2) % k:
        usual = "110" if k == 6 else "164"
        other = next(((n, j) for n, j in BLOCKS.values() if j != k and depth >= j + 2
                      and (depth - 2) % j == 0), None)
        hint = f", or pass --block-name {other[0]} ({other[1]}n+2)" if other else ""
        raise ValueError(f"--depth {depth} is not {k}n+2, which -a preresnet with --block-name "
                         f"{name} needs ({k + 2}, {2 * k + 2}, ..., e.g. {usual}){hint}")
    return (depth - 2) // k


def check(flags):
    if flags["block_name"].lower() not in BLOCKS:
        raise ValueError(f"--block-name {flags['block_name']} is not a block: use BasicBlock or "
                         "Bottleneck")
    blocks_per_stage(flags["depth"], flags["block_name"])


register(Arch("preresnet", lambda num_classes, depth, block_name: PreResNet(
    depth, num_classes, block_name), flags=(
        Flag("depth", int, 110, "6n+2, 9n+2 with Bottleneck", lo=1),
        Flag("block_name", str, "BasicBlock", "its block, BasicBlock or Bottleneck")),
    check=check, about="pre-activation ResNet",
    title=lambda f: f"PreResNet-{f['depth']}" + ("" if f["block_name"].lower() == "basicblock"
                                                 else " (Bottleneck)")))
