"""What the scripts print and write: epoch lines, the log.txt table, the final JSON line."""
import json
import os

from .distributed import is_main

COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "reg", "test_loss", "test_acc", "comp",
           "avg_bits", "seconds")


class TSVLog:
    """``log.txt``: a tab-separated table with one row per epoch.

    ``resume_epoch`` continues an interrupted run's table: rows up to that epoch are kept and
    later ones (an epoch logged before its checkpoint was committed) are dropped.
    """

    def __init__(self, path, resume_epoch=None):
        self.path, self.resume_epoch, self.started = path, resume_epoch, False

    def _start(self):
        """Rewrite the table at the first row, so a run that dies before it leaves it untouched."""
        rows = []
        if self.resume_epoch is not None and os.path.exists(self.path):
            with open(self.path) as f:
                rows = [r for r in f.read().splitlines()[1:]
                        if int(r.split("\t")[0]) <= self.resume_epoch]
        with open(self.path, "w") as f:
            f.write("".join(r + "\n" for r in ["\t".join(COLUMNS), *rows]))
        self.started = True

    def append(self, row):
        if not is_main():
            return
        if not self.started:
            self._start()
        with open(self.path, "a") as f:
            f.write("\t".join(_fmt(row[c]) for c in COLUMNS) + "\n")


def _fmt(value):
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def epoch_line(row, epochs):
    """One human-readable stdout line per epoch."""
    return (f"epoch {row['epoch']:>3}/{epochs}  lr {row['lr']:.4g}  "
            f"train loss {row['train_loss']:.4f} acc {row['train_acc']:6.2f}  "
            f"reg {row['reg']:.4g}  test loss {row['test_loss']:.4f} acc {row['test_acc']:6.2f}  "
            f"comp {row['comp']:.2f}x ({row['avg_bits']:.2f} bits)  {row['seconds']:.1f}s")


def summary(model, acc, best_acc, checkpoint, **extra):
    """The run's figures as one JSON line, the last line a script prints on stdout."""
    figures = {"acc": acc, "best_acc": best_acc, "comp": round(model.compression(), 4),
               "avg_bits": round(model.avg_bits(), 4),
               "scheme": model.scheme() if model.form != "float" else None,
               "checkpoint": checkpoint, **extra}
    print(json.dumps(figures), flush=True)
    return figures


def scheme_report(model):
    """Per quantized layer: shape, precision, percentage of ones per plane (MSB first), and
    the layer's share of the model's bits; then TP, TB, average bits and compression."""
    total, bits = model.size()
    lines = [f"{'layer':<18} {'shape':<18} {'bits':>4} {'share':>6}  ones per plane, MSB first (%)"]
    for name, m in model.quant_layers():
        for slot in m.slots:
            numel, nbits = m.sizes()[m.slots.index(slot)]
            label = name if slot == "weight" else f"{name} (bias)"
            ones = " ".join(f"{v:5.1f}" for v in m.plane_ones(slot)) if m.form == "bits" else "-"
            share = 100 * numel * nbits / bits if bits else 0.0
            shape = "x".join(str(d) for d in m.shapes[slot])
            lines.append(f"{label:<18} {shape:<18} {nbits:>4} {share:5.1f}%  {ones}")
    lines.append(f"TP {total} weights, TB {bits} bits, {bits / total:.3f} bits per weight, "
                 f"compression {model.compression():.2f}x")
    return "\n".join(lines)
