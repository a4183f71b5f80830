"""VGG for 32x32 inputs (the release's ``models/cifar/vgg.py``): the 3x3 conv stages of VGG-A, B,
D and E with or without BatchNorm, max pooling after each stage, and one linear classifier on the
1x1x512 map (no fully connected hidden layers).

Layer names, order and initialisation are the release's, so its float checkpoints load and a seed
draws the same initial weights: convs N(0, sqrt(2 / (k*k*out))) with zero bias, BatchNorm (1, 0),
the classifier N(0, 0.01) with zero bias.
"""
import math

import torch.nn as nn

from ..registry import Arch, register

POOL = "M"
CONFIGS = {  # conv widths, POOL a 2x2 max pool
    "vgg11": (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    "vgg13": (64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    "vgg16": (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512,
              512, POOL),
    "vgg19": (64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL,
              512, 512, 512, 512, POOL),
}


def features(config, batch_norm, width=1.0):
    """``nn.Sequential`` of conv (+ BatchNorm) + ReLU per width and a max pool per ``POOL``;
    ``width`` scales every channel count (1.0: the release's network)."""
    layers, channels = [], 3
    for item in config:
        if item == POOL:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        out = max(1, round(item * width))
        layers.append(nn.Conv2d(channels, out, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU(inplace=True))
        channels = out
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, features, num_classes=10):
        super().__init__()
        self.features = features  # (B, C, 1, 1) from a 32x32 input
        width = [m for m in features if isinstance(m, nn.Conv2d)][-1].out_channels
        self.classifier = nn.Linear(width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.features(x)  # (B, 512, 1, 1)
        return self.classifier(x.view(x.size(0), -1))  # (B, num_classes)


def _builder(config, batch_norm):
    def build(num_classes, width=1.0):
        return VGG(features(CONFIGS[config], batch_norm, width), num_classes)
    return build


for _name in CONFIGS:
    for _bn in (False, True):
        register(Arch(f"{_name}{'_bn' if _bn else ''}", _builder(_name, _bn),
                      about=f"VGG-{_name[3:]}{' with BatchNorm' if _bn else ''}"))
