"""ImageNet as torchvision's classification reference reads it: an ImageFolder tree, its
transforms, and a DataLoader whose every batch comes from the seed and the epoch.

Layout: ``DIR/train/<class>/<image>`` and ``DIR/val/<class>/<image>`` (any of torchvision's
image extensions, subfolders included); the classes are ``train/``'s subfolders in sorted order,
as ``torchvision.datasets.ImageFolder`` numbers them, and ``val/`` may hold any of them.

Transforms (torchvision's ``ClassificationPresetTrain`` / ``ClassificationPresetEval``):
training images get ``RandomResizedCrop(train_crop)`` (scale 0.08-1, ratio 3/4-4/3, bilinear,
antialiased) and a horizontal flip with probability 1/2; evaluation images ``Resize(val_resize)``
(the shorter side) and ``CenterCrop(val_crop)``; both then become float32 in [0, 1], normalised
with ImageNet's mean and std. 224 / 256 / 224 by default.

Order. Each epoch's order is ``DistributedSampler``'s, a permutation drawn from ``seed + epoch``
and split over the ranks under torchrun (padded by repeating samples so that every rank makes as
many steps); the random crop and flip of a sample come from its own generator, seeded from
``(seed, epoch, index)``. So an epoch's batches are the same whatever the number of workers and
whoever ran the epochs before: ``--resume`` continues exactly. The test split is read in order,
whole, by every rank (as the CIFAR loader's), so every rank computes the same accuracy.
"""
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .cifar import DataError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CROP, RESIZE = 224, 256  # torchvision's defaults; a crop c is resized from round(c * 256 / 224)
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val")


@dataclass(frozen=True)
class Crops:
    """Image sizes: the training crop, and the evaluation resize (shorter side) and crop."""
    train: int = CROP
    val_resize: int = RESIZE
    val: int = CROP

    @classmethod
    def from_args(cls, args, size=CROP):
        """``--train-crop-size``, ``--val-resize-size``, ``--val-crop-size``; those left out (None)
        from ``size`` (the network's input size): ``size``, ``round(size * 256 / 224)``, ``size``
        (224 / 256 / 224, Inception-V3's 299 / 342 / 299)."""
        train = getattr(args, "train_crop_size", None) or size
        val = getattr(args, "val_crop_size", None) or size
        resize = getattr(args, "val_resize_size", None) or round(val * RESIZE / CROP)
        if resize < val:
            raise DataError(f"--val-resize-size {resize} is smaller than --val-crop-size {val}: "
                            "the crop must fit in the resized image")
        return cls(train, resize, val)


def classes(root):
    """The class names of ``root/train`` (its subfolders, sorted); ``DataError`` naming the
    layout expected when the folder is missing or malformed."""
    for split in SPLITS:
        if not os.path.isdir(os.path.join(root, split)):
            raise DataError(f"no ImageNet folder {os.path.join(root, split)}: -d imagenet reads "
                            f"{root}/train/<class>/*.JPEG and {root}/val/<class>/*.JPEG (the "
                            "ImageFolder layout): pass --data-root DIR")
    train = os.path.join(root, "train")
    names = sorted(e.name for e in os.scandir(train) if e.is_dir())
    if not names:
        raise DataError(f"{train} holds no class folders: -d imagenet reads "
                        f"{train}/<class>/*.JPEG (the ImageFolder layout)")
    return names


def num_classes(root):
    """The number of classes of the ImageNet folder ``root``: its ``train/`` subfolders."""
    return len(classes(root))


def samples(root, split, names):
    """``[(path, class index)]`` of ``root/split``, in ImageFolder's order; ``DataError`` for a
    class ``train/`` lacks or a split without images."""
    folder = os.path.join(root, split)
    index = {name: i for i, name in enumerate(names)}
    found = []
    for name in sorted(e.name for e in os.scandir(folder) if e.is_dir()):
        if name not in index:
            raise DataError(f"{folder}/{name} is not a class of {root}/train: every {split}/ "
                            "class folder must also be in train/")
        for parent, _, files in sorted(os.walk(os.path.join(folder, name), followlinks=True)):
            found += [(os.path.join(parent, f), index[name]) for f in sorted(files)
                      if f.lower().endswith(EXTENSIONS)]
    if not found:
        flat = any(f.lower().endswith(EXTENSIONS) for f in os.listdir(folder))
        how = (" but images directly, as ImageNet's validation archive unpacks: sort them into "
               "class folders (torchvision's reference points to a script for it)") if flat else ""
        raise DataError(f"{folder} holds no images ({', '.join(EXTENSIONS)}) in class "
                        f"folders{how}: -d imagenet reads {folder}/<class>/*.JPEG")
    return found


def sample_seed(seed, epoch, index):
    """The seed of one sample's random crop and flip in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0])


class ImageFolderSplit(Dataset):
    """One split as ``(x float32 (3, crop, crop), class index)`` pairs, indexed by
    ``(index, epoch)``. The training split's crop and flip are those torchvision's
    ``RandomResizedCrop`` and ``RandomHorizontalFlip`` draw from a generator seeded with
    ``sample_seed(seed, epoch, index)``; the global generator is left as it was."""

    def __init__(self, items, crops, train, seed=0):
        self.items, self.crops, self.train, self.seed = items, crops, train, seed

    def __len__(self):
        return len(self.items)

    def __getitem__(self, key):
        index, epoch = key
        path, label = self.items[index]
        try:
            with Image.open(path) as f:
                image = f.convert("RGB")
        except Exception as e:  # PIL raises many kinds for a broken file
            raise DataError(f"cannot read image {path} ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:120]}): replace or remove it") from None
        from torchvision.transforms import functional as F  # 2 s to import: only on this path

        x = F.convert_image_dtype(F.pil_to_tensor(self.transform(image, epoch, index)))
        return F.normalize(x, MEAN, STD), label  # (3, crop, crop) float32

    def transform(self, image, epoch, index):
        """The PIL image after the split's resizing, crop and (training) flip."""
        from torchvision.transforms import RandomResizedCrop
        from torchvision.transforms import functional as F

        crops = self.crops
        if not self.train:
            image = F.resize(image, crops.val_resize, antialias=True)
            return F.center_crop(image, crops.val)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            top, left, height, width = RandomResizedCrop.get_params(image, SCALE, RATIO)
            flip = bool(torch.rand(1) < 0.5)
        image = F.resized_crop(image, top, left, height, width, [crops.train, crops.train],
                               antialias=True)
        return F.hflip(image) if flip else image


class _WithEpoch(Sampler):
    """A sampler's indices as ``(index, epoch)`` keys of ``ImageFolderSplit``."""

    def __init__(self, sampler):
        self.sampler, self.epoch = sampler, 0

    def set_epoch(self, epoch):
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self):
        return len(self.sampler)

    def __iter__(self):
        epoch = self.epoch
        return ((index, epoch) for index in self.sampler)


class ImageNetLoader:
    """Batches of one split on ``device``: x float32 (B, 3, crop, crop), y int64 (B,).

    A ``DataLoader`` with ``workers`` processes (persistent between epochs), pinned memory on
    CUDA, the last partial batch kept. Train: ``DistributedSampler`` order from ``seed + epoch``,
    rank ``rank`` of ``world_size``; test: in order, whole. Iterating advances the epoch by one;
    ``set_epoch(e)`` sets the epoch of the next iteration. The DataLoader draws its workers' seeds
    from a generator of its own, not from the global one, whose stream (dropout, ...) so does not
    depend on ``workers`` or on when a resumed run started its workers.
    """

    def __init__(self, items, crops, batch_size, device, train, seed=0, workers=4, rank=0,
                 world_size=1):
        self.device = torch.device(device)
        dataset = ImageFolderSplit(items, crops, train, seed)
        order = (DistributedSampler(dataset, world_size, rank, shuffle=True, seed=seed)
                 if train else range(len(items)))
        self.sampler = _WithEpoch(order)
        self.loader = DataLoader(dataset, batch_size, sampler=self.sampler, num_workers=workers,
                                 pin_memory=self.device.type == "cuda",
                                 persistent_workers=workers > 0,
                                 generator=torch.Generator().manual_seed(seed))

    def set_epoch(self, epoch):
        self.sampler.set_epoch(epoch)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        try:
            for x, y in self.loader:
                yield (x.to(self.device, non_blocking=True),
                       y.to(self.device, non_blocking=True))
        except DataError as e:  # from a worker: its message is the traceback's last line
            raise DataError(str(e).strip().splitlines()[-1].split("DataError: ", 1)[-1]) \
                from None
        self.set_epoch(self.sampler.epoch + 1)


def imagenet_loaders(root, crops, train_batch, test_batch, device, workers=4, seed=0, rank=0,
                     world_size=1):
    """The training and test (``val/``) loaders of the ImageNet folder ``root``."""
    names = classes(root)
    return (ImageNetLoader(samples(root, "train", names), crops, train_batch, device, True,
                           seed, workers, rank, world_size),
            ImageNetLoader(samples(root, "val", names), crops, test_batch, device, False, seed,
                           workers))
