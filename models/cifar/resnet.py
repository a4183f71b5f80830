"""The release's CIFAR ResNet, ``-a resnet``: depth ``6n + 2``, BasicBlocks, run for run.

A 3x3 stem conv with BatchNorm and a plain ReLU, three stages of ``n`` BasicBlocks (widths
16/32/64; the first block of stages 2 and 3 halves the size and has a 1x1 conv + BatchNorm
shortcut), 8x8 average pooling and a linear classifier. As the release quantizes it: every conv
and the classifier become bit layers except the shortcut convs, and both activations of every
block get a quantizer (the stem's ReLU stays plain: the rule of ``models/swap.py``). Layer names,
registration order and initialisation are the release's, so its checkpoints load, its optimizer
states line up and a seed draws its initial weights.

What exists here only to match the release is its entry's ``ReleasePolicy``
(``models/registry.py``): the clamp that chooses parameters by name (``release_clamped``), the
finetune form without the classifier bias, and ``--act 0`` as PACT clipping without a quantizer.
"""
import fnmatch
import math

import torch.nn as nn

from utils.cli.flags import Flag

from ..registry import Arch, ReleasePolicy, register
from ..swap import SHORTCUTS


def conv3x3(inplanes, planes, stride=1):
    return nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv-BN-ReLU, conv-BN, plus the shortcut, ReLU; the 1x1 shortcut conv when the shape
    changes."""

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        shortcut = None  # built first, as in the release, so that initialisation draws the same
        if stride != 1 or inplanes != planes:  # random numbers in the same order
            shortcut = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)  # registered after the convs, as in the release, so
        self.relu2 = nn.ReLU(inplace=True)  # that PACT's alphas and optimizer states line up
        self.downsample = shortcut

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + shortcut)


class ResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs, in float; ``models.build_model("resnet", ...)`` turns it
    into the release's bit network."""

    def __init__(self, depth=20, num_classes=10):
        super().__init__()
        n = blocks_per_stage(depth)
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        widths, inplanes, stages = (16, 32, 64), 16, []
        for i, width in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(inplanes, width, 2 if i > 0 and j == 0 else 1))
                inplanes = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, num_classes)
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d) and not _is_shortcut(name):  # the shortcut convs keep
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels  # PyTorch's init
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 16, 32, 32)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 64, 8, 8)
        return self.fc(self.avgpool(x).flatten(1))  # (B, num_classes)


def _is_shortcut(name):
    return fnmatch.fnmatchcase(name, SHORTCUTS)


def blocks_per_stage(depth):
    """``n`` of a ResNet of ``depth = 6n + 2``; ``ValueError`` naming the rule."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"--depth {depth} is not 6n+2, which -a resnet needs (8, 14, 20, 32, 44, "
                         "56, 110, ...)")
    return (depth - 2) // 6


def check(flags):
    blocks_per_stage(flags["depth"])
    if flags.get("block_name", "BasicBlock").lower() != "basicblock":
        raise ValueError(f"--block-name {flags['block_name']}: the release's -a resnet has no bit "
                         "representation of Bottleneck blocks (its scripts fail with them): use "
                         "--block-name BasicBlock, or -a preresnet")


def describe(state):
    """``{"depth", "num_classes"}`` of a ResNet state dict (ours or the release's, any form),
    read off its keys and shapes; None for what it does not show."""
    blocks = {k.split(".")[1] for k in state if k.startswith("layer1.")}
    fc = next((v for k, v in state.items() if k in ("fc.weight", "fc.pweight")), None)
    return {"depth": 6 * len(blocks) + 2 if blocks else None,
            "num_classes": None if fc is None else fc.shape[0]}


def release_clamped(name, form):
    """Whether the release clamps the parameter ``name`` after a step in ``form``: in bits form
    every one named without ``scale`` or ``bn`` (bit planes, shortcut convs and their BatchNorm
    ``downsample.1``, PACT's alphas), in finetune form every one named with ``weight`` and
    without ``bn`` (finetune weights, shortcut convs, their BatchNorm's weight). Only to match
    the release: ``--corrected`` clamps by role (``BitModel.clamp_``)."""
    if form == "bits":
        return "scale" not in name and "bn" not in name
    return "weight" in name and "bn" not in name


RESNET = register(Arch(
    "resnet", lambda num_classes, depth: ResNet(depth, num_classes), flags=(
        Flag("depth", int, 20, "6n+2", lo=1),), check=check, about="the release's CIFAR ResNet",
    title=lambda f: f"ResNet-{f['depth']}", float_layers=(SHORTCUTS,), describe=describe,
    policy=ReleasePolicy(clamp=release_clamped)))
