"""What the scripts print: the progress of a run on stderr, one line per epoch and the final JSON
line on stdout (so that ``> run.txt`` keeps a clean record)."""
import math
import sys
import time

from tqdm import tqdm

from utils.store.files import json_text

BAR_SYNC_EVERY = 20  # steps between the bar's loss/accuracy readings (each one a host sync)


def duration(seconds):
    """``1h02m``, ``4m05s`` or ``12s``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """Where a run stands, on stderr, with the time left for the whole run.

    On a terminal a progress bar; otherwise (a cluster job, ``nohup``, CI) one plain line every
    ``every`` seconds (0: none). ``begin(epoch, steps)``, ``tick(step, read)`` after each step,
    ``end()`` after the epoch; ``read()`` returns the running (loss, accuracy) and is called only
    when a line or the bar's figures are due, since it may wait for the device. ``quiet``
    (the other ranks under torchrun) shows nothing but still keeps the time.
    """

    def __init__(self, epochs, first_epoch=0, every=60.0, stream=None, quiet=False):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() and not quiet
        self.epochs, self.first_epoch, self.every = epochs, first_epoch, 0 if quiet else every
        self.start = time.monotonic()
        self.epoch = self.steps = self.epoch_start = self.last = None
        self.bar = None

    def begin(self, epoch, steps):
        self.epoch, self.steps = epoch, steps
        self.epoch_start = self.last = time.monotonic()
        if self.tty:
            self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}", file=self.stream, leave=False,
                            dynamic_ncols=True)

    def tick(self, step, read):
        """After ``step`` (1-based) steps of the epoch."""
        if self.bar is not None:
            self.bar.update(1)
            if step % BAR_SYNC_EVERY == 1:
                loss, acc = read()
                self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.2f}")
        elif self.every and time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            loss, acc = read()
            print(f"epoch {self.epoch + 1}/{self.epochs} step {step}/{self.steps}  loss {loss:.4f} "
                  f"acc {acc:.2f}%  elapsed {duration(self.last - self.start)}  "
                  f"eta {duration(self.eta(step))}", file=self.stream, flush=True)

    def end(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def elapsed(self):
        return time.monotonic() - self.start

    def eta(self, step=None):
        """Seconds left in the run: the epochs to go at the pace of the run so far."""
        fraction = 1.0 if step is None else step / max(self.steps, 1)
        done = self.epoch - self.first_epoch + fraction  # epochs' worth of work behind us
        return self.elapsed() / done * (self.epochs - self.first_epoch - done) if done > 0 else 0.0


def times(ratio):
    """A compression for people: ``4.00x``, or ``undefined (no bits)`` for a model whose every
    tensor is at precision 0 (32 TP / TB with TB = 0: infinite, or null in JSON)."""
    return "undefined (no bits)" if ratio is None or not math.isfinite(ratio) else f"{ratio:.2f}x"


def epoch_line(row, epochs, elapsed=None, eta=None):
    """One human-readable stdout line per epoch (the test pass's top-5 when the row has it)."""
    top5 = f" top-5 {row['test_acc5']:6.2f}" if row.get("test_acc5") is not None else ""
    line = (f"epoch {row['epoch']:>3}/{epochs}  lr {row['lr']:.4g}  "
            f"train loss {row['train_loss']:.4f} acc {row['train_acc']:6.2f}  "
            f"reg {row['reg']:.4g}  test loss {row['test_loss']:.4f} acc {row['test_acc']:6.2f}"
            f"{top5}  comp {times(row['comp'])} ({row['avg_bits']:.2f} bits)  "
            f"{row['seconds']:.1f}s")
    if elapsed is not None:
        line += f"  elapsed {duration(elapsed)}  eta {duration(eta)}"
    return line


def summary(model, acc, best_acc, checkpoint, **extra):
    """The run's figures as one strict-JSON line, the last line a script prints on stdout, each
    number to 4 decimals (an accuracy counted in fp32, 33.33333206176758, as 33.3333; the
    checkpoints keep the release's values).

    ``comp`` is null for a model without any bit (every tensor at precision 0); ``bops``: the
    bit-operations of one image's forward pass (``model.bops()``).
    """
    figures = {"acc": acc, "best_acc": best_acc, "comp": model.compression(),
               "avg_bits": model.avg_bits(), "bops": model.bops(),
               "scheme": model.scheme() if model.form != "float" else None,
               "checkpoint": checkpoint, **extra}
    figures = {k: round(v, 4) if isinstance(v, float) and math.isfinite(v) else v
               for k, v in figures.items()}
    print(json_text(figures))
    return figures
