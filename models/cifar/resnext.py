"""ResNeXt for 32x32 inputs (the release's ``models/cifar/resnext.py``): a 3x3 stem conv of 64
channels, three stages of bottlenecks (1x1 reduce, 3x3 grouped conv with ``--cardinality``
groups, 1x1 expand) of widths 64k/128k/256k (``--widen-factor`` k), 8x8 average pooling and a
linear classifier. Depth ``9n + 2`` (the release's default 29 is ResNeXt-29).

Layer names, order and initialisation are the release's: the classifier's weight Kaiming-normal
(fan in), then every conv weight Kaiming-normal (fan out), BatchNorm weights 1 and every bias 0, in
the order of the state dict. The ReLUs are functional calls, each quantized on its own
(``models/swap.py``). ``--drop`` is accepted and unused, as in the release.
"""
import torch.nn as nn
import torch.nn.functional as F
from torch.nn import init

from utils.cli.flags import Flag

from ..registry import Arch, register


class ResNeXtBottleneck(nn.Module):
    def __init__(self, in_channels, out_channels, stride, cardinality, widen_factor):
        super().__init__()
        d = cardinality * out_channels // widen_factor  # channels of the grouped conv
        self.conv_reduce = nn.Conv2d(in_channels, d, kernel_size=1, stride=1, padding=0,
                                     bias=False)
        self.bn_reduce = nn.BatchNorm2d(d)
        self.conv_conv = nn.Conv2d(d, d, kernel_size=3, stride=stride, padding=1,
                                   groups=cardinality, bias=False)
        self.bn = nn.BatchNorm2d(d)
        self.conv_expand = nn.Conv2d(d, out_channels, kernel_size=1, stride=1, padding=0,
                                     bias=False)
        self.bn_expand = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if in_channels != out_channels:
            self.shortcut.add_module("shortcut_conv", nn.Conv2d(
                in_channels, out_channels, kernel_size=1, stride=stride, padding=0, bias=False))
            self.shortcut.add_module("shortcut_bn", nn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = F.relu(self.bn_reduce(self.conv_reduce(x)), inplace=True)
        out = F.relu(self.bn(self.conv_conv(out)), inplace=True)
        out = self.bn_expand(self.conv_expand(out))
        return F.relu(self.shortcut(x) + out, inplace=True)


class CifarResNeXt(nn.Module):
    def __init__(self, cardinality=8, depth=29, num_classes=10, widen_factor=4):
        super().__init__()
        self.cardinality, self.depth, self.widen_factor = cardinality, depth, widen_factor
        self.block_depth = blocks_per_stage(depth)
        self.num_classes = num_classes
        self.stages = [64, 64 * widen_factor, 128 * widen_factor, 256 * widen_factor]
        self.conv_1_3x3 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn_1 = nn.BatchNorm2d(64)
        self.stage_1 = self._stage("stage_1", self.stages[0], self.stages[1], 1)
        self.stage_2 = self._stage("stage_2", self.stages[1], self.stages[2], 2)
        self.stage_3 = self._stage("stage_3", self.stages[2], self.stages[3], 2)
        self.classifier = nn.Linear(self.stages[3], num_classes)
        init.kaiming_normal_(self.classifier.weight)
        for key, tensor in self.state_dict().items():
            kind = key.split(".")[-1]
            if kind == "weight" and "conv" in key:
                init.kaiming_normal_(tensor, mode="fan_out")
            if kind == "weight" and "bn" in key:
                tensor[...] = 1
            elif kind == "bias":
                tensor[...] = 0

    def _stage(self, name, in_channels, out_channels, stride):
        stage = nn.Sequential()
        for i in range(self.block_depth):
            stage.add_module(f"{name}_bottleneck_{i}", ResNeXtBottleneck(
                in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1,
                self.cardinality, self.widen_factor))
        return stage

    def forward(self, x):
        x = F.relu(self.bn_1(self.conv_1_3x3(x)), inplace=True)
        x = self.stage_3(self.stage_2(self.stage_1(x)))  # (B, 256 k, 8, 8)
        x = F.avg_pool2d(x, 8, 1)
        return self.classifier(x.view(-1, self.stages[3]))  # (B, num_classes)


def blocks_per_stage(depth):
    if depth < 11 or (depth - 2) % 9:
        raise ValueError(f"--depth {depth} is not 9n+2, which -a resnext needs (11, 20, 29, ...)")
    return (depth - 2) // 9


def check(flags):
    blocks_per_stage(flags["depth"])
    for flag in ("cardinality", "widen_factor"):
        if flags[flag] < 1:
            raise ValueError(f"--{flag.replace('_', '-')} {flags[flag]} is not >= 1")
    if (flags["cardinality"] * 64) % flags["widen_factor"] or \
            (flags["cardinality"] * 64 // flags["widen_factor"]) % flags["cardinality"]:
        raise ValueError(f"--cardinality {flags['cardinality']} does not divide the grouped "
                         f"convs' channels at --widen-factor {flags['widen_factor']}")


register(Arch("resnext", lambda num_classes, depth, cardinality, widen_factor, drop: CifarResNeXt(
    cardinality, depth, num_classes, widen_factor), flags=(
        Flag("depth", int, 29, "9n+2", lo=1),
        Flag("cardinality", int, 8, "groups of the 3x3 convs", lo=1),
        Flag("widen_factor", int, 4, "width multiplier", lo=1),
        Flag("drop", float, 0.0, "accepted, unused, as in the release", lo=0, hi=1, hi_open=True,
             names=("--drop", "--dropout"))),
    check=check, about="ResNeXt",
    title=lambda f: f"ResNeXt-{f['depth']} ({f['cardinality']}x64d, widen {f['widen_factor']})"))
