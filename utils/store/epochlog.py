"""``log.txt``: one tab-separated row per epoch, continued (never overwritten) by ``--resume``.

A line starting with ``# after epoch E:`` is a note between the rows (a flag a resume changed);
readers skip it.
"""
import csv
import io
import os

from utils.errors import BSQError
from utils.ranks import is_main
from utils.store.files import atomic_write

COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "reg", "test_loss", "test_acc", "comp",
           "avg_bits", "seconds")
EXTRA = ("alpha",)  # columns some runs add: a budgeted BSQ run's alpha at the epoch's end
DIALECT = {"delimiter": "\t", "lineterminator": "\n"}
NOTE = "# after epoch "


class LogError(BSQError):
    """A ``log.txt`` that cannot be read back."""


def _raw_rows(path):
    """The rows of ``path`` as dicts of strings, blank lines and notes skipped; ``LogError`` if
    damaged."""
    with open(path, newline="") as f:
        reader = csv.DictReader((line for line in f if not line.startswith(NOTE)),
                                delimiter="\t")
        if _extra(reader.fieldnames) is None:
            raise LogError(f"{path} does not start with the header of log.txt: move it away "
                           "(or start a new run in another --checkpoint folder)")
        rows = []
        for row in reader:
            if None in row or None in row.values() or not row["epoch"].isdigit():
                raise LogError(f"{path} is damaged at line {reader.line_num}: repair or delete "
                               "that line, then run again")
            rows.append(row)
    return rows


def _extra(header):
    """The ``EXTRA`` columns of a ``log.txt`` header, or None when it is not one."""
    header = tuple(header or ())
    extra = header[len(COLUMNS):]
    return extra if header[:len(COLUMNS)] == COLUMNS and set(extra) <= set(EXTRA) else None


def read_log(path):
    """``log.txt`` as ``{column: [value per epoch]}``, numbers parsed (``epoch`` as int)."""
    rows = _raw_rows(path)
    columns = (*COLUMNS, *(c for c in EXTRA if rows and c in rows[0]))
    try:
        return {c: [int(r[c]) if c == "epoch" else float(r[c]) for r in rows] for c in columns}
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
    """Appends one row per epoch to ``log.txt``, with ``extra`` columns of ``EXTRA`` after the
    others. Under torchrun only rank 0 writes.

    ``resume_epoch`` continues an interrupted run's table: rows and notes up to that epoch are
    kept and later ones (an epoch logged before its checkpoint was committed) are dropped; a
    ``note`` is written after them. The table is rewritten (atomically) at the first row, so a
    run that dies before it leaves the file as it was.
    """

    def __init__(self, path, resume_epoch=None, note=None, extra=()):
        self.path, self.resume_epoch, self.started = path, resume_epoch, False
        self.columns = (*COLUMNS, *extra)
        self.note = None if note is None else f"{NOTE}{resume_epoch or 0}: {note}\n"

    def append(self, row):
        if not is_main():
            return
        line = _format([row[c] for c in self.columns])
        if self.started:
            with open(self.path, "a") as f:
                f.write(line)
            return
        kept = []
        if self.resume_epoch is not None and os.path.exists(self.path):
            _raw_rows(self.path)  # intact, or LogError
            with open(self.path, newline="") as f:
                kept = [old for old in f.readlines()[1:] if old.strip()
                        and _epoch_of(old) <= self.resume_epoch]
        atomic_write(self.path, "".join([_format(self.columns), *kept, self.note or "", line]))
        self.started = True


def _epoch_of(line):
    """The epoch a row or a note of ``log.txt`` belongs to."""
    return int(line.removeprefix(NOTE).split(":" if line.startswith(NOTE) else "\t", 1)[0])


def _format(values):
    out = io.StringIO()
    csv.writer(out, **DIALECT).writerow(f"{v:.6g}" if isinstance(v, float) else v for v in values)
    return out.getvalue()
