"""How the command line spells a flag, for every message that names one: imports nothing of the
project, so that every module may use it."""


def option(dest):
    """The flag of an argparse ``dest``: ``train_batch`` -> ``--train-batch``, ``Prun_Int``."""
    return "--" + (dest.replace("_", "-") if dest.islower() else dest)
