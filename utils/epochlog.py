"""``log.txt``: one tab-separated row per epoch, continued (never overwritten) by ``--resume``."""
import csv
import io
import os

from .distributed import is_main
from .errors import BSQError
from .files import atomic_write

COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "reg", "test_loss", "test_acc", "comp",
           "avg_bits", "seconds")
DIALECT = {"delimiter": "\t", "lineterminator": "\n"}


class LogError(BSQError):
    """A ``log.txt`` that cannot be read back."""


def _raw_rows(path):
    """The rows of ``path`` as dicts of strings, blank lines skipped; ``LogError`` if damaged."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise LogError(f"{path} does not start with the header of log.txt: move it away "
                           "(or start a new run in another --checkpoint folder)")
        rows = []
        for row in reader:
            if None in row or None in row.values() or not row["epoch"].isdigit():
                raise LogError(f"{path} is damaged at line {reader.line_num}: repair or delete "
                               "that line, then run again")
            rows.append(row)
    return rows


def read_log(path):
    """``log.txt`` as ``{column: [value per epoch]}``, numbers parsed (``epoch`` as int)."""
    rows = _raw_rows(path)
    try:
        return {c: [int(r[c]) if c == "epoch" else float(r[c]) for r in rows] for c in COLUMNS}
    except ValueError as e:
        raise LogError(f"{path} holds a value that is not a number ({e}): repair it") from None


def check_log(path):
    """Before a resumed run trains: ``path`` (if present) is readable, writable and intact."""
    if not os.path.exists(path):
        return
    read_log(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not (os.access(path, os.W_OK) and os.access(folder, os.W_OK)):
        raise LogError(f"{path} (or its folder) is not writable: fix the permissions, then resume")


class EpochLog:
    """Appends one row per epoch to ``log.txt``. Under torchrun only rank 0 writes.

    ``resume_epoch`` continues an interrupted run's table: rows up to that epoch are kept and
    later ones (an epoch logged before its checkpoint was committed) are dropped. The table is
    rewritten (atomically) at the first row, so a run that dies before it leaves the file as it
    was.
    """

    def __init__(self, path, resume_epoch=None):
        self.path, self.resume_epoch, self.started = path, resume_epoch, False

    def append(self, row):
        if not is_main():
            return
        line = _format([row[c] for c in COLUMNS])
        if self.started:
            with open(self.path, "a") as f:
                f.write(line)
            return
        kept = []
        if self.resume_epoch is not None and os.path.exists(self.path):
            kept = [r for r in _raw_rows(self.path) if int(r["epoch"]) <= self.resume_epoch]
        atomic_write(self.path, "".join([_format(COLUMNS), *(_format(r.values()) for r in kept),
                                         line]))
        self.started = True


def _format(values):
    out = io.StringIO()
    csv.writer(out, **DIALECT).writerow(f"{v:.6g}" if isinstance(v, float) else v for v in values)
    return out.getvalue()
