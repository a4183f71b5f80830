"""Checkpoint files: saving, safe loading, and the original release's layout.

A checkpoint is a ``torch.save`` dict with the release's fields ``state_dict``, ``Nbit_dict``
(bit and finetune models), ``epoch``, ``acc``, ``best_acc``, ``optimizer``, plus our ``arch``
(what rebuilds the model), ``args`` (the flags of the run) and ``rng``. Everything loads with
``weights_only=True``; anything that is not such a file, or holds non-finite numbers, is refused
with one line.
"""
import math
import os
import pickle
import warnings
import zipfile
from typing import NamedTuple

import torch

from utils.errors import BSQError
from utils.quant.bits import MAX_BITS
from utils.ranks import is_main
from utils.store.files import atomic_writer

PREFIX = "module."

class BitNames(NamedTuple):
    """The release's names of one quantized tensor's parameters: its planes and its scale."""
    p: str
    n: str
    scale: str


# The release's parameter names, which every checkpoint in its layout uses (models/bitlayer.py)
NAMES = {"weight": BitNames("pweight", "nweight", "scale"),
         "bias": BitNames("pbias", "nbias", "biasscale")}
PACT_ALPHA = "alpha"  # a PACT quantizer's clipping level, e.g. layer1.0.relu1.alpha
FIELDS = {"epoch": int, "acc": (int, float), "best_acc": (int, float), "optimizer": dict,
          "Nbit_dict": dict, "arch": dict, "args": dict, "rng": dict}  # optional, checked when set
ZIP_MAGIC = b"PK\x03\x04"  # torch.save since PyTorch 1.6
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # older torch.save
PICKLE_PROTOCOL = b"\x80"


class CheckpointError(BSQError):
    """A checkpoint that cannot be read or does not fit the model."""


def save_checkpoint(state, path):
    """Write ``state`` to ``path`` atomically (``utils/store/files.py``); under torchrun, rank 0
    only.

    Streamed into the temporary file, so a checkpoint takes no second copy in memory (a ResNet-50
    at 8 bits with its momentum is 3.3 GB); a full disk is an ``OSError`` naming ``path``.
    """
    if not is_main():
        return
    with atomic_writer(path) as f:
        torch.save(state, f)


def checkpoint_state(model, *, epoch=0, acc=None, best_acc=None, optimizer=None, args=None,
                     scheme=None, **extra):
    """The dict saved for ``model`` (a ``BitModel``): the release's fields, plus ``arch`` (its
    ``arch_spec`` and form, what rebuilds it) and ``args``.

    ``Nbit_dict`` is the model's scheme in bits and finetune form; a float model records the
    ``scheme`` it was derived from, if one is given (the release's float checkpoints have none).
    ``args`` is the run's flags (an ``argparse.Namespace``); ``extra`` fields are stored as given.
    """
    if scheme is None and model.form != "float":
        scheme = model.scheme()
    state = {
        "state_dict": model.state_dict(),
        "epoch": epoch,
        "acc": acc,
        "best_acc": best_acc,
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "arch": {**model.arch_spec, "form": model.form},
        "args": dict(vars(args)) if args is not None else None,
        **extra,
    }
    if scheme is not None:
        state["Nbit_dict"] = scheme
    return state


def load_checkpoint(path):
    """Read a checkpoint with ``weights_only=True``; a bare state dict is wrapped as one.

    Raises ``CheckpointError`` (one line) for a missing, truncated, foreign or unsafe file, and
    for one whose tensors or accuracies are not finite (a damaged run).

    A zip file (``torch.save`` since PyTorch 1.6) is memory-mapped: its tensors are read when
    used, copy-on-write, so that a 3 GB checkpoint loads in seconds and takes no memory it does
    not need.
    """
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} is a folder: give the .pth.tar file in it")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist: check the path")
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_MAGIC))
    if head.startswith(PICKLE_PROTOCOL) and head != LEGACY_MAGIC:
        raise CheckpointError(f"checkpoint {path} is a plain pickle, not a torch.save file, and "
                              "was refused: only tensors and plain containers are loaded")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True,
                             mmap=head.startswith(ZIP_MAGIC))
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise CheckpointError(f"checkpoint {path} needs arbitrary code to unpickle and was "
                                  "refused: only tensors and plain containers are loaded") from None
        raise CheckpointError(f"checkpoint {path} is not a readable PyTorch checkpoint, or is "
                              "corrupt") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError, KeyError,
            AttributeError, TypeError, IndexError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} is not a readable PyTorch checkpoint, or is "
                              f"truncated ({_first_line(e)})") from None
    if isinstance(obj, dict) and "state_dict" not in obj and _is_state_dict(obj):
        obj = {"state_dict": obj}
    if not isinstance(obj, dict) or not _is_state_dict(obj.get("state_dict")):
        raise CheckpointError(f"checkpoint {path} holds no model state_dict")
    for field, types in FIELDS.items():
        if obj.get(field) is not None and not isinstance(obj[field], types):
            raise CheckpointError(f"checkpoint {path} has a malformed {field!r} field "
                                  f"({type(obj[field]).__name__}): it is not a checkpoint of "
                                  "these scripts or the release")
    for field in ("acc", "best_acc"):
        if obj.get(field) is not None and not math.isfinite(obj[field]):
            raise CheckpointError(f"checkpoint {path} records a non-finite {field} "
                                  f"({obj[field]}): it is damaged, use an earlier one")
    bad = next((k for k, v in obj["state_dict"].items() if not _finite(v)), None)
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} holds non-finite values in {bad}: it is "
                              "damaged, use an earlier one")
    return obj


def _finite(tensor):
    """Whether every element of ``tensor`` is finite. A sum with a NaN or an infinity in it is
    not finite, and a sum is 20x faster than ``isfinite`` over every element; only a sum that
    is not finite (which a finite tensor's overflow can also give) is checked element by element.
    """
    if not tensor.is_floating_point():
        return True
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def _is_state_dict(obj):
    return (isinstance(obj, dict) and bool(obj)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def strip_prefix(state_dict):
    """Drop DataParallel's ``module.`` prefix from every key."""
    return {k.removeprefix(PREFIX): v for k, v in state_dict.items()}


def state_form(state_dict):
    """``"bits"``, ``"finetune"`` or ``"float"``, read off the parameter names."""
    if any(k.endswith("." + NAMES["weight"].p) for k in state_dict):
        return "bits"
    if any(k.endswith("." + NAMES["weight"].scale) for k in state_dict):
        return "finetune"
    return "float"


def read_scheme(ckpt):
    """The checkpoint's ``Nbit_dict`` as ``{layer: [N_w, N_b]}`` with plain ints, or None.

    Bit checkpoints without one get it from their plane counts.
    """
    scheme = ckpt.get("Nbit_dict")
    if isinstance(scheme, dict) and scheme:
        try:
            scheme = {k.removeprefix(PREFIX): [int(n) for n in v] + [0] * (2 - len(v))
                      for k, v in scheme.items()}
        except (TypeError, ValueError, AttributeError):
            scheme = None
        if scheme is None or not all(len(v) == 2 and 0 <= min(v) and max(v) <= MAX_BITS
                                     for v in scheme.values()):
            raise CheckpointError("the checkpoint's Nbit_dict is malformed: expected "
                                  "{layer: [N_weight, N_bias]} with precisions 0..8")
        return scheme
    state = strip_prefix(ckpt["state_dict"])
    if state_form(state) != "bits":
        return None
    weight, bias = NAMES["weight"].p, NAMES["bias"].p
    layers = {k[: -len(weight) - 1] for k in state if k.endswith("." + weight)}
    return {name: [state[f"{name}.{weight}"].shape[-1],
                   state[f"{name}.{bias}"].shape[-1] if f"{name}.{bias}" in state else 0]
            for name in layers}
