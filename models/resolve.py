"""``-a`` text -> architecture entry: the registry's names, a researcher's network, torchvision's.

- a name of the registry (``models/registry.py``): the release's CIFAR networks (``resnet``,
  ``vgg16_bn``, ``alexnet``, ...);
- ``path/to/file.py:factory`` or ``package.module:factory``: a researcher's own network
  (``models/custom.py``);
- ``torchvision.NAME``: torchvision's classification network ``NAME`` (``models/torchvision.py``).
  A bare ``NAME`` that the registry does not hold (``resnet18``, ``mobilenet_v2``) is torchvision's
  too: its entry is named ``torchvision.NAME``, which every run prints on its first line and every
  checkpoint records, so a run always says which network it built. ``alexnet`` and ``vgg*`` are
  the release's CIFAR networks; torchvision's are ``torchvision.alexnet``, ``torchvision.vgg16``.
"""
import difflib

from .custom import custom_arch, is_custom
from .registry import ARCHS, ArchError
from .torchvision import PREFIX, names, torchvision_arch


def get_arch(name):
    """The registry entry ``name``, a researcher's network ``file.py:factory``, or torchvision's
    ``torchvision.NAME`` (or ``NAME``); ``ArchError`` naming the choices."""
    if name in ARCHS:
        return ARCHS[name]
    if is_custom(name):
        return custom_arch(name)
    entry = torchvision_arch(name)
    if entry is not None:
        return entry
    if name.endswith(".py"):
        raise ArchError(f"-a {name}: a network of your own is named with the function that "
                        f"builds it: -a {name}:FACTORY (e.g. -a {name}:net)")
    close = difflib.get_close_matches(name.removeprefix(PREFIX), [*ARCHS, *names()], n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ArchError(f"-a {name} is not an architecture: {hint}use one of {', '.join(ARCHS)}, "
                     f"torchvision's classification networks as {PREFIX}NAME (e.g. "
                     f"{PREFIX}resnet50), or your own network as path/to/file.py:factory")
