"""Training and test data: CIFAR-10/100 (``cifar.py``), on the device loader or the release's, and
ImageNet in the ImageFolder layout (``imagenet.py``), on torchvision's DataLoader path."""
from utils.data.release import OnDevice, release_loaders

from . import imagenet
from .cifar import DATASETS, LOADERS, DataError, DeviceLoader, load_cifar
from .cifar import num_classes as cifar_classes
from .imagenet import CROP, Crops, imagenet_loaders

__all__ = ["CROP", "DATASET_NAMES", "IMAGENET", "LOADERS", "Crops", "DataError", "build_loaders",
           "image_shapes", "input_shape", "num_classes"]

IMAGENET = "imagenet"
DATASET_NAMES = (*DATASETS, IMAGENET)
CIFAR_SIZE = 32


def num_classes(dataset, root="./data"):
    """The number of classes of ``dataset``: CIFAR's, or the class folders of ``root/train``
    for ImageNet (``DataError`` when the folder is not an ImageFolder tree)."""
    if dataset == IMAGENET:
        return imagenet.num_classes(root)
    return cifar_classes(dataset)


def input_shape(args):
    """``(C, H, W)`` of the test images the data flags describe, as the models see them."""
    if args.dataset == IMAGENET:
        size = Crops.from_args(args).val
        return (3, size, size)
    return (3, CIFAR_SIZE, CIFAR_SIZE)


def image_shapes(args):
    """The ``(C, H, W)`` of the training and of the test images, the test images' last (one entry
    when they are alike)."""
    test = input_shape(args)
    train = (3, *[Crops.from_args(args).train] * 2) if args.dataset == IMAGENET else test
    return list(dict.fromkeys([train, test]))


def build_loaders(dataset, root, train_batch, test_batch, device, loader="device", workers=4,
                  seed=0, rank=0, world_size=1, download=True, crops=Crops()):
    """Train and test loaders yielding (x float32 (B,3,H,W), y int64 (B,)) on ``device``.

    CIFAR: ``loader`` is "device" (``DeviceLoader``: only the training split is sharded over
    ``world_size`` ranks; every rank tests on all of it) or "release" (``release_loaders``, the
    release's single-process path). ImageNet: ``imagenet_loaders`` at ``crops`` with ``workers``
    DataLoader processes (``loader`` "device" names it; there is no release path). Returns
    (train_loader, test_loader); both have ``set_epoch``.
    """
    if loader not in LOADERS:
        raise DataError(f"unknown loader {loader!r}: use --loader device or --loader release")
    if dataset == IMAGENET:
        if loader == "release":
            raise DataError("--loader release is the release's CIFAR DataLoader and the release "
                            "has no ImageNet path: drop --loader (-d imagenet reads its folder "
                            "with torchvision's DataLoader)")
        return imagenet_loaders(root, crops, train_batch, test_batch, device, workers, seed,
                                rank, world_size)
    if loader == "release" and world_size > 1:
        raise DataError("--loader release is the release's single-process DataLoader (one global "
                        f"random order), and this run has {world_size} processes: use --loader "
                        "device under torchrun")
    train = load_cifar(dataset, root, True, download)
    test = load_cifar(dataset, root, False, download)
    if loader == "device":
        return (DeviceLoader(*train, train_batch, device, True, seed, rank, world_size),
                DeviceLoader(*test, test_batch, device, False, seed))
    train_loader, test_loader = release_loaders(*train, *test, train_batch, test_batch, workers)
    return OnDevice(train_loader, device), OnDevice(test_loader, device)
