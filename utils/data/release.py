"""The release's data path, ``--loader release``: exactly its DataLoaders over CIFAR.

torchvision's PIL transforms in DataLoader workers, the order and the workers' seeds drawn from the
global torch generator, so that a run seeded as the release's sees the release's batches
(``utils/data/cifar.py`` is the default, on-device loader).
"""
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from utils.data.cifar import MEAN, PAD, STD


class _ImageDataset(Dataset):
    """uint8 (N, 3, 32, 32) images and labels as (PIL image, int) pairs, like torchvision's."""

    def __init__(self, images, labels, transform):
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, 32, 32, 3) uint8
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def release_loaders(train_images, train_labels, test_images, test_labels, train_batch,
                    test_batch, workers=4):
    """The release's data path exactly: ``DataLoader(shuffle=True, num_workers=workers)`` over
    the training split with ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``,
    ``ToTensor()`` and ``Normalize``, and the test split in order, unaugmented.

    The samples are torchvision's CIFAR datasets' (PIL images of the same pixels, int labels).
    Every iteration draws from the global torch generator, as the release's does: the workers'
    base seed, and for the training split the permutation's seed; with ``workers = 0`` also the
    crops and flips. A run seeded and drawing as the release's script so sees its batches. The
    loaders yield CPU tensors.
    """
    from torchvision import transforms  # imported only on this path: 2 s at every start

    normalize = [transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    augment = [transforms.RandomCrop(32, padding=PAD), transforms.RandomHorizontalFlip()]
    train = _ImageDataset(train_images, train_labels, transforms.Compose(augment + normalize))
    test = _ImageDataset(test_images, test_labels, transforms.Compose(normalize))
    return (DataLoader(train, batch_size=train_batch, shuffle=True, num_workers=workers),
            DataLoader(test, batch_size=test_batch, shuffle=False, num_workers=workers))


class OnDevice:
    """Wraps a DataLoader so batches arrive on ``device`` like DeviceLoader's; its order is the
    global generator's, so ``set_epoch`` changes nothing."""

    def __init__(self, loader, device):
        self.loader, self.device = loader, torch.device(device)

    def set_epoch(self, epoch):
        pass

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
