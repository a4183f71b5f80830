"""The CIFAR networks of the release's ``models/cifar``, each registering itself: ``resnet`` (the
one the release quantizes), ``preresnet``, ``resnext``, ``wrn``, ``densenet``, ``alexnet`` and
``vgg11`` .. ``vgg19_bn``. Every module of this package is imported, in name order, so a new
network is one module that calls ``register`` (``docs/networks.md``)."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
