"""TensorBoard event files in a run's folder, so that ``tensorboard --logdir runs/sweep`` shows
every run (every stage of a sweep) side by side while it trains.

Steps are epochs, numbered from 1 as in ``log.txt``: epoch e's row (lr, train loss and accuracy,
B/TP, test loss and accuracy, compression, average bits, seconds) at step e; the precision each
layer gets at a re-quantization before epoch e (docs/method.md, steps 1-3) at step e; and at the
end, one step after the last epoch, the final model's precisions and the run's flags with its
final figures as hparams. Only finite numbers are written (``comp`` of a model without any bit is
left out). Rank 0 alone writes (``utils/train/distributed.py``).

A resumed run appends to the same folder and shows each epoch once: its writer starts at the
resumed epoch + 1 as TensorBoard's purge step, which discards what the interrupted run wrote from
that step on (an epoch logged after its last checkpoint, which the resumed run redoes). A run
started afresh in a folder (``--overwrite``, or after a run that never saved an epoch) first
removes the event files found there.
"""
import glob
import importlib.util
import math
import os

from utils.errors import BSQError
from utils.ranks import is_main

TAGS = {"lr": "train/lr", "train_loss": "train/loss", "train_acc": "train/acc",
        "reg": "train/reg", "test_loss": "test/loss", "test_acc": "test/acc",
        "comp": "model/compression", "avg_bits": "model/avg_bits",
        "seconds": "time/epoch_seconds"}  # log.txt column -> scalar tag
BUDGET_TAGS = {"alpha": "bsq/alpha"}  # the columns only a budgeted BSQ run's log.txt has
FINAL = ("acc", "best_acc", "comp", "avg_bits")  # the final figures shown as hparams metrics
EVENT_FILES = "events.out.tfevents.*"


class NullBoard:
    """What a run writes with ``--no-tensorboard``, and on ranks other than 0: nothing."""

    def epoch(self, row):
        pass

    def precisions(self, epoch, scheme):
        pass

    def finish(self, flags, figures):
        return figures

    def close(self):
        pass


NO_BOARD = NullBoard()


class Board(NullBoard):
    """The event files of the run in ``folder``; ``resume_epoch``: the epochs a resumed run has
    done (None for a run started afresh). Events are written with each epoch's row, right before
    its checkpoint (a re-quantization's precisions wait for the row of the epoch they start), so
    a run that fails before its first epoch's checkpoint leaves the folder as it was."""

    def __init__(self, folder, resume_epoch=None):
        self.folder, self.resume_epoch = folder, resume_epoch
        self.last_epoch = resume_epoch or 0
        self.pending, self.writer = [], None  # (tag, value, step) not yet written

    def _add(self, tag, value, step):
        if value is not None and math.isfinite(value):
            self.pending.append((tag, value, step))

    def _write(self):
        """The pending events, on disk; the writer opens at the first."""
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter  # imported only by runs that log
            if self.resume_epoch is None:
                for path in glob.glob(os.path.join(glob.escape(self.folder), EVENT_FILES)):
                    os.unlink(path)
            purge = None if self.resume_epoch is None else self.resume_epoch + 1
            self.writer = SummaryWriter(self.folder, purge_step=purge)
        for tag, value, step in self.pending:
            self.writer.add_scalar(tag, value, step)
        self.pending = []
        self.writer.flush()
        return self.writer

    def epoch(self, row):
        """Epoch ``row["epoch"]``'s row of ``log.txt``."""
        for column, tag in {**TAGS, **BUDGET_TAGS}.items():
            self._add(tag, row.get(column), row["epoch"])
        self.last_epoch = row["epoch"]
        self._write()

    def precisions(self, epoch, scheme):
        """``scheme`` (``{layer: [N_weight, N_bias]}``) as set before epoch ``epoch``."""
        for layer, (weight, bias) in scheme.items():
            self._add(f"precision/{layer}", weight, epoch)
            self._add(f"precision_bias/{layer}", bias, epoch)

    def finish(self, flags, figures):
        """The run's ``flags`` (an argparse namespace) as hparams, with the final ``figures`` (the
        script's JSON line) as their metrics and its scheme as precisions; returns ``figures``."""
        from torch.utils.tensorboard.summary import hparams
        step = self.last_epoch + 1
        if figures.get("scheme"):
            self.precisions(step, figures["scheme"])
        metrics = {f"final/{k}": figures[k] for k in FINAL
                   if figures.get(k) is not None and math.isfinite(figures[k])}
        for tag, value in metrics.items():
            self._add(tag, value, step)
        values = {k: " ".join(map(str, v)) if isinstance(v, (list, tuple)) else v
                  for k, v in sorted(vars(flags).items()) if v is not None}
        writer = self._write()
        for summary in hparams(values, metrics):
            writer.file_writer.add_summary(summary, step)
        self.close()
        return figures

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def open_board(args, resume=None):
    """The board of the run in ``args.checkpoint`` (``resume``: its loaded ``--resume``
    checkpoint), or ``NO_BOARD`` with ``--no-tensorboard`` and on ranks other than 0."""
    if not args.tensorboard or not is_main():
        return NO_BOARD
    if importlib.util.find_spec("tensorboard") is None:
        raise BSQError("TensorBoard is not installed: pip install tensorboard (requirements.txt), "
                       "or pass --no-tensorboard")
    return Board(args.checkpoint, None if resume is None else resume.get("epoch") or 0)
