"""The CIFAR networks of the release's ``models/cifar``, each registering itself: ``resnet`` (the
one the release quantizes), ``preresnet``, ``resnext``, ``wrn``, ``densenet``, ``alexnet`` and
``vgg11`` .. ``vgg19_bn``."""
from . import (  # noqa: F401,I001
    alexnet,
    densenet,
    preresnet,
    resnet,  # noqa: F401  (first: the default and the release's own)
    resnext,
    vgg,
    wrn,
)
