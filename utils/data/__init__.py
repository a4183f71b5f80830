"""Training and test data: CIFAR-10/100 (``cifar.py``), on the device loader or the release's."""
from utils.release import OnDevice, release_loaders

from .cifar import LOADERS, DataError, DeviceLoader, load_cifar, num_classes

__all__ = ["build_loaders", "input_shape", "num_classes", "DataError", "LOADERS"]


def input_shape(args):
    """``(C, H, W)`` of the images the data flags describe, as the models see them."""
    return (3, 32, 32)


def build_loaders(dataset, root, train_batch, test_batch, device, loader="device", workers=4,
                  seed=0, rank=0, world_size=1, download=True):
    """Train and test loaders yielding (x float32 (B,3,32,32), y int64 (B,)) on ``device``.

    ``loader`` is "device" (``DeviceLoader``: only the training split is sharded over
    ``world_size`` ranks; every rank tests on all of it) or "release" (``release_loaders``, the
    release's single-process path). Returns (train_loader, test_loader); both have ``set_epoch``.
    """
    if loader not in LOADERS:
        raise DataError(f"unknown loader {loader!r}: use --loader device or --loader release")
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
