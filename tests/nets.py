"""A researcher's own network, as ``-a tests/nets.py:tiny`` (or ``-a nets:tiny``) would give it:
the cases the swap must handle besides the release's networks."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Tiny(nn.Module):
    """A stem conv, a depthwise conv, a pointwise conv with bias, a ReLU module called twice, a
    functional ReLU, BatchNorms not named ``bn``, dropout, a linear head."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
        self.norm2 = nn.BatchNorm2d(8)
        self.pointwise = nn.Conv2d(8, 16, 1)
        self.act = nn.ReLU(inplace=True)  # called twice
        self.drop = nn.Dropout(0.25)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.stem_activation(self.norm1(self.stem(x)))  # (B, 8, 32, 32), the stem's
        x = self.act(self.norm2(self.depthwise(x)))  # (B, 8, 16, 16)
        x = F.relu(self.pointwise(x))  # (B, 16, 16, 16)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, 16)
        return self.head(self.drop(x))  # (B, num_classes)

    def stem_activation(self, x):
        return self.act(x)  # the stem's ReLU: plain


def tiny(num_classes=10):
    return Tiny(num_classes)


class SiLUNet(nn.Module):
    """Only SiLU and a sigmoid gate: activations BSQ leaves float."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.SiLU()
        self.gate = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        x = self.act(self.stem(x))  # (B, 8, 32, 32)
        x = x * torch.sigmoid(self.gate(x))  # (B, 8, 32, 32), a squeeze-excitation-like gate
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))  # (B, num_classes)


def silu_net(num_classes=10):
    return SiLUNet(num_classes)


class SiLUStem(Tiny):
    """``Tiny`` whose stem activation is a SiLU: every ReLU after it is quantized."""

    def stem_activation(self, x):
        return F.silu(x)  # the stem's: float, as a SiLU


def silu_stem(num_classes=10):
    return SiLUStem(num_classes)


class Untraceable(nn.Module):
    """A forward pass with data-dependent control flow, which ``torch.fx`` cannot trace."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        x = self.conv(x)  # (B, 8, 32, 32)
        if x.mean() > 0:  # a branch on the data
            x = F.relu(x)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))  # (B, num_classes)


def untraceable(num_classes=10):
    return Untraceable(num_classes)


class Zoo(nn.Module):
    """What model code calls besides convs and ReLUs: Hardswish and SiLU as functions, a
    squeeze-excitation gate with ``torch.sigmoid``, biased 1x1 convs, means, nearest and
    bilinear interpolation, LayerNorm, GELU and dropout."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.squeeze, self.excite = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.down = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.norm, self.gelu = nn.LayerNorm(16), nn.GELU()
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        x = F.hardswish(self.bn(self.stem(x)))  # (B, 16, 32, 32), the stem's
        gate = torch.sigmoid(self.excite(F.relu(self.squeeze(x.mean((2, 3), keepdim=True)))))
        x = x * gate  # (B, 16, 32, 32)
        y = F.silu(self.down(x))  # (B, 16, 16, 16)
        x = F.relu(x + F.interpolate(y, scale_factor=2, mode="nearest")
                   + F.interpolate(y, size=(32, 32), mode="bilinear", align_corners=False))
        x = F.dropout(self.gelu(self.norm(torch.mean(x, dim=(2, 3)))), 0.1, self.training)
        return self.head(x)  # (B, num_classes)


def zoo(num_classes=10):
    return Zoo(num_classes)
