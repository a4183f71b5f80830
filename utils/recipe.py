"""The paper's recipe: each training stage's schedule (README, "The recipe")."""
from typing import NamedTuple


class Recipe(NamedTuple):
    """A training stage's schedule: epochs, lr and its milestones, ``--Prun_Int``, weight decay."""
    epochs: int
    lr: float
    schedule: tuple
    prun_int: int = 0
    wd: float = 1e-4


# The paper's ResNet-20 / CIFAR-10 recipe: what sweep.py passes to every stage, and
# cifar_train.py's defaults.
RECIPE = {
    "train": Recipe(350, 0.1, (150, 250, 325)),
    "bsq": Recipe(350, 0.1, (250,), prun_int=100),
    "finetune": Recipe(300, 0.01, (150, 250)),
}
