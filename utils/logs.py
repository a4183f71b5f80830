"""What the scripts print and write: epoch lines, the log.txt table, the final JSON line, and
the scheme report (as text, and as ``scheme.json``)."""
import json
import math
import os
import tempfile

from .distributed import is_main

COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "reg", "test_loss", "test_acc", "comp",
           "avg_bits", "seconds")
FLOAT_BITS = 32  # bits of an unquantized weight in the size accounting


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


def scheme_dict(model, acc=None):
    """The scheme report as data, the content of ``scheme.json``.

    ``layers``: one entry per quantized tensor, in module order: ``name``, ``tensor``
    (``"weight"`` or ``"bias"``), ``shape``, ``bits`` (its precision N), ``share`` (percent of TB)
    and ``ones`` (percent of nonzero bits ``p_i - n_i`` per plane, MSB first; None unless the
    model is in bits form). ``totals``: ``TP``, ``TB``, ``avg_bits`` (TB/TP), ``compression``
    (32 TP/TB; None when TB is 0) and ``acc`` (the test accuracy given, or None). ``scheme``: the
    release's ``Nbit_dict``. A float model counts 32 bits per weight, as ``model.size()`` does.
    """
    total, bits = model.size()
    layers = []
    for name, m in model.quant_layers():
        for slot, (numel, nbits) in zip(m.slots, m.sizes()):
            nbits = FLOAT_BITS if m.form == "float" else nbits
            layers.append({"name": name, "tensor": slot, "shape": list(m.shapes[slot]),
                           "bits": nbits, "share": 100 * numel * nbits / bits if bits else 0.0,
                           "ones": m.plane_ones(slot) if m.form == "bits" else None})
    compression = model.compression()
    return {"layers": layers,
            "totals": {"TP": total, "TB": bits, "avg_bits": bits / total,
                       "compression": compression if math.isfinite(compression) else None,
                       "acc": acc},
            "scheme": model.scheme() if model.form != "float" else None}


def scheme_report(model, acc=None):
    """Per quantized layer: shape, precision, percentage of ones per plane (MSB first), and
    the layer's share of the model's bits; then TP, TB, average bits, compression and, when
    ``acc`` is given, the test accuracy. The text form of ``scheme_dict``."""
    report = scheme_dict(model, acc)
    lines = [f"{'layer':<18} {'shape':<18} {'bits':>4} {'share':>6}  ones per plane, MSB first (%)"]
    for row in report["layers"]:
        label = row["name"] if row["tensor"] == "weight" else f"{row['name']} (bias)"
        shape = "x".join(str(d) for d in row["shape"])
        ones = "-" if row["ones"] is None else " ".join(f"{v:5.1f}" for v in row["ones"])
        lines.append(f"{label:<18} {shape:<18} {row['bits']:>4} {row['share']:5.1f}%  {ones}")
    totals = report["totals"]
    line = (f"TP {totals['TP']} weights, TB {totals['TB']} bits, {totals['avg_bits']:.3f} bits per "
            f"weight, compression {model.compression():.2f}x")
    lines.append(line if acc is None else f"{line}, test accuracy {acc:.2f}%")
    return "\n".join(lines)


def write_json(obj, path):
    """Write ``obj`` as indented JSON to ``path`` atomically (temporary file, then rename)."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_scheme_json(model, path, acc=None):
    """Write ``scheme_dict(model, acc)`` to ``path`` (``scheme.json`` beside a checkpoint) and
    return it. Under torchrun only rank 0 writes."""
    report = scheme_dict(model, acc)
    if is_main():
        write_json(report, path)
    return report


def read_log(path):
    """``log.txt`` as ``{column: [value per epoch]}``, numbers parsed (``epoch`` as int)."""
    with open(path) as f:
        rows = [line.split("\t") for line in f.read().splitlines() if line.strip()]
    header, body = rows[0], rows[1:]
    return {col: [int(r[i]) if col == "epoch" else float(r[i]) for r in body]
            for i, col in enumerate(header)}
