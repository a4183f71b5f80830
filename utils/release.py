"""What exists only to match the original release: its parsers' defaults, the flags its
convert.py accepts without using them, and its data path.

The release's command lines run here unchanged and mean what they mean there, defaults included;
these are the pieces a faithful reimplementation needs and a new one would not have. (Its clamp by
parameter name is its ResNet's, in ``models/cifar/resnet.py``.)

``release_loaders`` (``--loader release``) is the release's data path exactly: torchvision's PIL
transforms in DataLoader workers, the order and the workers' seeds drawn from the global torch
generator, so that a run seeded as the release's sees the release's batches.
"""
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from utils.data.cifar import MEAN, PAD, STD
from utils.recipe import Recipe

# The defaults of the release's own parsers (cifar_prune_STE.py, cifar_finetune.py, convert.py),
# which are those of our scripts of the same names: a flag left out means what it means there.
RELEASE_DEFAULTS = {
    "bsq": Recipe(350, 0.1, (150, 225), prun_int=50, wd=5e-4),
    "finetune": Recipe(300, 0.1, (150, 225), wd=5e-4),
    "convert": Recipe(300, 0.1, (150, 225), wd=5e-4),
}
RELEASE_SEED, RELEASE_NBITS, RELEASE_CHECKPOINT, RELEASE_DECAY = 1234, 4, "checkpoint", 0.01


def add_unused_flags(parser, schedule):
    """The training flags of the release's convert.py, which does not train: accepted with the
    release's types and defaults (``schedule``, a ``Recipe``), so that its command lines run;
    their values are kept as ``unused_<name>``."""
    group = parser.group("accepted for the release's command lines; unused, as in the release")
    for flags, kind, default in (
            (("--epochs",), int, schedule.epochs), (("--start-epoch",), int, 0),
            (("--train-batch",), int, 128), (("--lr", "--learning-rate"), float, schedule.lr),
            (("--gamma",), float, 0.1), (("--momentum",), float, 0.9),
            (("--wd", "--weight-decay"), float, schedule.wd), (("--decay",), float, RELEASE_DECAY),
            (("--resume",), str, ""), (("--manualSeed",), int, RELEASE_SEED)):
        dest = "unused_" + flags[0].lstrip("-").replace("-", "_")
        group.add_argument(*flags, type=kind, default=default, dest=dest, help="training")
    group.add_argument("--schedule", type=int, nargs="+", default=list(schedule.schedule),
                       dest="unused_schedule", help="training")
    group.add_argument("-e", "--evaluate", action="store_true", dest="unused_evaluate",
                       help="training")


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
