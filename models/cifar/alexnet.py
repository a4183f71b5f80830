"""AlexNet for 32x32 inputs (the release's ``models/cifar/alexnet.py``): five convs with ReLU and
three max pools, then one linear classifier on the 1x1x256 map; PyTorch's default
initialisation, layers built in the release's order."""
import torch.nn as nn

from ..registry import Arch, register


class AlexNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=5), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2))
        self.classifier = nn.Linear(256, num_classes)

    def forward(self, x):
        x = self.features(x)  # (B, 256, 1, 1)
        return self.classifier(x.view(x.size(0), -1))  # (B, num_classes)


register(Arch("alexnet", lambda num_classes: AlexNet(num_classes), about="AlexNet"))
