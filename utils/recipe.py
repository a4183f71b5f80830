"""The paper's recipes: each training stage's schedule, per dataset (README, "The recipe" and
"ImageNet")."""
from typing import NamedTuple


class Recipe(NamedTuple):
    """A training stage's schedule: epochs, lr and its milestones, ``--Prun_Int``, weight decay,
    and the batch of one step over all processes (None: ``--train-batch``'s default, 128, in
    each process, as the CIFAR recipe's one GPU had it)."""
    epochs: int
    lr: float
    schedule: tuple
    prun_int: int = 0
    wd: float = 1e-4
    batch: int = None


# The paper's ResNet-20 / CIFAR-10 recipe: what sweep.py passes to every stage, and
# cifar_train.py's defaults.
RECIPE = {
    "train": Recipe(350, 0.1, (150, 250, 325)),
    "bsq": Recipe(350, 0.1, (250,), prun_int=100),
    "finetune": Recipe(300, 0.01, (150, 250)),
}

# ImageNet. The paper (ResNet-50, Inception-V3; two GPUs) starts BSQ from pretrained models and
# follows PyTorch's official ImageNet example; the epochs, learning rates and alphas of its
# ImageNet runs are not taken from it here (README, "ImageNet"): they are our choice. Pretraining
# is that example's: 90 epochs, batch 256, lr 0.1 x0.1 every 30 epochs, weight decay 1e-4 (or
# torchvision's weight file). BSQ trains on the same schedule, re-quantizing at each lr step
# (Prun_Int 30: after epochs 30 and 60, and at the end; the CIFAR recipe re-quantizes after 100,
# 200 and 300, and at the end),
# and finetuning runs as long as BSQ at a tenth of its lr, as the CIFAR recipe finetunes (300
# epochs at 0.01 after 350 at 0.1).
IMAGENET_RECIPE = {
    "train": Recipe(90, 0.1, (30, 60), batch=256),
    "bsq": Recipe(90, 0.1, (30, 60), prun_int=30, batch=256),
    "finetune": Recipe(90, 0.01, (30, 60), batch=256),
}


def recipe_for(dataset):
    """The recipe of ``dataset``: ImageNet's for "imagenet", else the CIFAR one."""
    return IMAGENET_RECIPE if dataset == "imagenet" else RECIPE
