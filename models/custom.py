"""A researcher's own network: ``-a path/to/file.py:factory`` or ``-a package.module:factory``.

``factory(num_classes=N)`` returns the float network (any ``nn.Module``); it goes through the
same swap as every registry entry (``models/build.py``), so every script, checkpoint and export
works on it. Checkpoints record the ``-a`` text, so the file must be where it was (a path is read
relative to the current folder).
"""
import importlib
import importlib.util
import os
import sys

import torch.nn as nn

from .registry import Arch, ArchError

_LOADED = {}  # -a text -> Arch, so that a file is imported once per process


class CustomArchError(ArchError):
    """An ``-a file.py:factory`` that cannot be imported or called."""


def is_custom(name):
    return ":" in name


def custom_arch(name):
    """The ``Arch`` of ``-a name`` = ``file.py:factory`` or ``package.module:factory``."""
    if name not in _LOADED:
        target, _, factory = name.rpartition(":")
        module = _import(target, name)
        build = getattr(module, factory, None)
        if not callable(build):
            raise CustomArchError(f"-a {name}: {target} has no function {factory!r}: name the "
                                  "function that returns your network")
        _LOADED[name] = Arch(name, _checked(build, name), about=f"{factory} of {target}",
                             input_size=None)
    return _LOADED[name]


def _import(target, name):
    try:
        if target.endswith(".py"):
            if not os.path.isfile(target):
                raise CustomArchError(f"-a {name}: {target} does not exist: give the path of "
                                      "the file that defines your network")
            module_name = f"bsq_custom_{abs(hash(os.path.abspath(target)))}"
            spec = importlib.util.spec_from_file_location(module_name, target)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(target)
    except CustomArchError:
        raise
    except Exception as e:  # the user's code: whatever it raises, one line
        raise CustomArchError(f"-a {name}: importing {target} failed ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]}): fix it, or check the "
                              "path") from None


def _checked(build, name):
    def factory(num_classes):
        try:
            net = build(num_classes=num_classes)
        except Exception as e:
            raise CustomArchError(f"-a {name}: calling it with num_classes={num_classes} "
                                  f"failed ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
                                  ": it must accept num_classes=N") from None
        if not isinstance(net, nn.Module):
            raise CustomArchError(f"-a {name} returned a {type(net).__name__}, not an nn.Module")
        return net
    return factory
