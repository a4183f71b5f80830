"""The release's parsers: their defaults, and the flags its convert.py accepts without using them.

The release's command lines run here unchanged and mean what they mean there, defaults included.
(Its data path is ``utils/data/release.py``; its clamp by parameter name and its other
network-level behaviours are its ResNet's ``ReleasePolicy``, ``models/cifar/resnet.py``.)
"""
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
