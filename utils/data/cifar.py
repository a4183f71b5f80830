"""CIFAR-10/100 data: reading the official python-version batches, and the device loader.

``DeviceLoader`` (the default) keeps a whole split on the training device and does
random crop + flip + normalisation there, batch-vectorised; each epoch's order comes from the
seed and the epoch. The release's own DataLoader path is ``utils.data.release.release_loaders``.
"""
import os
import pickle
import socket
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from utils.errors import BSQError

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
PAD = 4  # RandomCrop(32, padding=4)
DOWNLOAD_TIMEOUT_S = 10
LOADERS = ("device", "release")


class DataError(BSQError):
    """A data problem the user must fix; the message is one line naming the problem and the fix."""


class _Spec(NamedTuple):
    title: str
    folder: str
    train_files: tuple
    test_files: tuple
    label_key: str
    num_classes: int
    url: str
    md5: str


DATASETS = {
    "cifar10": _Spec("CIFAR-10", "cifar-10-batches-py",
                     tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "labels", 10,
                     "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                     "c58f30108f718f92721af3b95e74349a"),
    "cifar100": _Spec("CIFAR-100", "cifar-100-python", ("train",), ("test",), "fine_labels", 100,
                      "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                      "eb9058c3a382ffc7106e4002c42a8d85"),
}


def _spec(name):
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: use cifar10 or cifar100")
    return DATASETS[name]


def num_classes(name):
    """The number of classes of dataset ``name`` ("cifar10" or "cifar100")."""
    return _spec(name).num_classes


def _one_line(err):
    return " ".join(f"{type(err).__name__}: {err}".split())


def download_and_extract_archive(url, download_root, md5):
    """torchvision's downloader, imported on first use (torchvision takes 2 s to import)."""
    from torchvision.datasets.utils import download_and_extract_archive as download

    download(url, download_root=download_root, md5=md5)


def _download(spec, root, folder):
    """Fetch and unpack the official archive into ``root``, failing fast when offline.

    A failed download removes the folders it created, so a mistyped ``--data-root`` leaves
    nothing behind.
    """
    created = _missing_parents(root)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        download_and_extract_archive(spec.url, download_root=root, md5=spec.md5)
    except Exception as err:
        for path in created:  # deepest first; only folders left empty
            if os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)
        raise DataError(f"no {spec.title} data in {folder} and it cannot be downloaded from "
                        f"{spec.url} ({_one_line(err)}; offline?): put the python-version batches "
                        f"there or pass --data-root DIR") from err
    finally:
        socket.setdefaulttimeout(old_timeout)


def _missing_parents(path):
    """The folders of ``path`` that do not exist yet, deepest first."""
    missing, path = [], os.path.abspath(path)
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def _read_batch(path, label_key, num_classes):
    """One pickled batch -> (data uint8 (n,3,32,32), labels int64 (n,)); DataError if unreadable."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        data, labels = np.asarray(batch["data"]), np.asarray(batch[label_key])
    except Exception as err:
        raise DataError(f"cannot read CIFAR batch {path} ({_one_line(err)}): "
                        f"replace it with the official file or pass --data-root DIR") from err
    integers = np.issubdtype(labels.dtype, np.integer) or not len(labels)  # [] reads as float
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        problem = f"data is {data.dtype} {data.shape}, expected uint8 (N, 3072)"
    elif labels.shape != (len(data),) or not integers:
        problem = f"labels are {labels.dtype} {labels.shape}, expected {len(data)} integers"
    elif len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        problem = f"labels span {labels.min()}..{labels.max()}, expected 0..{num_classes - 1}"
    else:
        return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)
    raise DataError(f"bad CIFAR batch {path} ({problem}): "
                    f"replace it with the official file or pass --data-root DIR")


def _check_not_inside(spec, root):
    """``root`` is neither the dataset's own folder (``cifar-10-batches-py``) nor a folder of its
    batch files: ``--data-root`` names the folder that holds that one."""
    if os.path.basename(os.path.normpath(root)) == spec.folder:
        parent = os.path.dirname(os.path.normpath(root)) or "."
        raise DataError(f"--data-root {root} is the {spec.title} folder itself; it names the "
                        f"folder that holds {spec.folder}/: give its parent, --data-root {parent}")
    if all(os.path.isfile(os.path.join(root, f)) for f in spec.train_files + spec.test_files):
        raise DataError(f"--data-root {root} holds the {spec.title} batch files themselves; it "
                        f"names the folder that holds {spec.folder}/: move them into "
                        f"{os.path.join(root, spec.folder)}/ and keep this --data-root")


def load_cifar(name, root, train, download=True):
    """Read one split of CIFAR-10 ("cifar10") or CIFAR-100 ("cifar100") from ``root``.

    Expects the official python-version layout (``root/cifar-10-batches-py/data_batch_1..5``,
    ``test_batch``; ``root/cifar-100-python/train``, ``test``). Batch files are not
    checksummed, so modified copies are read as they are. Only when the folder is missing and
    ``download`` is true is the official archive fetched (MD5-checked); a folder that exists
    is never overwritten, so a missing file in it is an error.

    Returns images uint8 (N, 3, 32, 32) and labels int64 (N,).
    """
    spec = _spec(name)
    folder = os.path.join(root, spec.folder)
    paths = [os.path.join(folder, f) for f in (spec.train_files if train else spec.test_files)]
    if not os.path.isdir(folder):
        _check_not_inside(spec, root)
        if not download:
            raise DataError(f"no {spec.title} data in {folder} (download disabled): "
                            f"put the python-version batches there or pass --data-root DIR")
        _download(spec, root, folder)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError(f"{spec.title} batch {missing[0]} is missing: "
                        f"put the python-version batches in {folder} or pass --data-root DIR")
    batches = [_read_batch(p, spec.label_key, spec.num_classes) for p in paths]
    images = torch.from_numpy(np.concatenate([b[0] for b in batches]))  # (N, 3, 32, 32) uint8
    labels = torch.from_numpy(np.concatenate([b[1] for b in batches]))  # (N,) int64
    if not len(labels):
        raise DataError(f"the {spec.title} {'training' if train else 'test'} split in {folder} "
                        "holds no images: replace its batch files with the official ones or "
                        "pass --data-root DIR")
    return images, labels


def _epoch_generator(seed, epoch):
    """CPU generator of one epoch of the device loader: the same order on every device."""
    return torch.Generator().manual_seed(seed + epoch)


def _shard(n, rank, world_size):
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    return len(range(rank, n, world_size))


def random_crop_flip(x, offsets, flips):
    """Per-sample random crop of the PAD-zero-padded batch, then optional horizontal flip.

    Same result as torchvision ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``
    given the crop's top/left offsets and the flip decisions.
    x: uint8 (B, C, H, W); offsets: int64 (B, 2) rows/cols in 0..2*PAD; flips: bool (B,).
    """
    b, c, h, w = x.shape
    padded = F.pad(x, (PAD, PAD, PAD, PAD))  # (B, C, H+2P, W+2P), zeros around
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)  # (B, W)
    return padded[torch.arange(b, device=x.device)[:, None, None, None],
                  torch.arange(c, device=x.device)[None, :, None, None],
                  rows[:, None, :, None],
                  cols[:, None, None, :]]  # (B, C, H, W)


class DeviceLoader:
    """Batches of a whole uint8 split kept on ``device``; yields normalised float32 x, int64 y.

    Train: each epoch is one permutation drawn from ``seed + epoch``, with per-sample random
    crop (4-pixel zero padding) and horizontal flip. Test: fixed order, no augmentation.
    The last partial batch is kept. With ``world_size > 1`` rank r takes ``order[r::world_size]``
    of the epoch (augmentation decisions are drawn per epoch position, so every sample gets the
    same crop/flip whatever the world size). Iterating advances the epoch by one;
    ``set_epoch(e)`` sets the epoch of the next iteration.
    """

    def __init__(self, images, labels, batch_size, device, train, seed=0, rank=0, world_size=1):
        self.device = torch.device(device)
        self.images = images.to(self.device)  # (N, 3, 32, 32) uint8
        self.labels = labels.to(self.device)  # (N,) int64
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size = rank, world_size
        self.num_samples = _shard(len(labels), rank, world_size)
        self.epoch = 0
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return -(-self.num_samples // self.batch_size)

    def __iter__(self):
        n, shard = len(self.labels), slice(self.rank, None, self.world_size)
        if self.train:
            g = _epoch_generator(self.seed, self.epoch)
            order = torch.randperm(n, generator=g)  # (N,)
            offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=g)  # (N, 2) top, left
            flips = torch.rand(n, generator=g) < 0.5  # (N,)
            per_sample = (order, offsets, flips)
        else:
            per_sample = (torch.arange(n),)
        self.epoch += 1
        batches = zip(*(t[shard].to(self.device).split(self.batch_size) for t in per_sample))
        for idx, *augment in batches:
            x = self.images[idx]  # (B, 3, 32, 32) uint8
            if augment:
                x = random_crop_flip(x, *augment)
            yield x.float().div_(255).sub_(self.mean).div_(self.std), self.labels[idx]
