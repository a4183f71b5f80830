"""PNG charts of BSQ runs: per-layer precision, training curves, and a sweep's trade-off.

matplotlib is in ``requirements.txt`` but nothing else needs it: without it the plotting functions
raise ``MissingExtra``, a one-line ``BSQError`` with the install command.
"""
import json
import os

from utils.cli.errors import BSQError
from utils.store.checkpoint import load_checkpoint, read_scheme
from utils.store.epochlog import read_log

SCHEME_SOURCES = ("best_bin.pth.tar", "checkpoint.pth.tar")  # scheme of a run without scheme.json


class MissingExtra(BSQError):
    """An optional dependency is not installed."""


def pyplot():
    """matplotlib's pyplot with the file-only Agg backend, or ``MissingExtra``."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtra("plots need matplotlib, which is not installed: pip install "
                           "matplotlib (or pip install -r requirements.txt)") from None
    return plt


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def plot_precision(report, path, title="precision per layer"):
    """Bar chart of each quantized tensor's precision, from a ``scheme_dict`` (``scheme.json``).

    Bars are labelled with their share of the model's bits when the report has it.
    """
    plt = pyplot()
    layers = report["layers"]
    labels = [r["name"] if r["tensor"] == "weight" else f"{r['name']} (bias)" for r in layers]
    bits = [r["bits"] for r in layers]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(layers) + 2), 4.2))
    bars = ax.bar(range(len(layers)), bits, color=["tab:blue" if r["tensor"] == "weight"
                                                   else "tab:orange" for r in layers])
    for bar, row in zip(bars, layers):
        if row.get("share") is not None:
            top = (bar.get_x() + bar.get_width() / 2, bar.get_height())
            ax.annotate(f"{row['share']:.0f}%", top, ha="center", va="bottom", fontsize=6)
    ax.set_xticks(range(len(layers)), labels, rotation=90, fontsize=7)
    ax.set_ylim(0, max(max(bits, default=0), 8) + 1)
    ax.set_ylabel("bits (weight precision N)")
    totals = report.get("totals") or {}
    facts = [f"{totals['avg_bits']:.2f} bits avg" if totals.get("avg_bits") is not None else "",
             f"{totals['compression']:.2f}x" if totals.get("compression") is not None else "",
             f"acc {totals['acc']:.2f}%" if totals.get("acc") is not None else ""]
    title = ", ".join([title, *filter(None, facts)])
    if any(r.get("share") is not None for r in layers):
        title += "\n(bar labels: the tensor's share of the model's bits)"
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_curves(log, path, requant_epochs=(), final=None, title="training curves"):
    """Test accuracy, regularizer B/TP, compression and average bits against epoch.

    ``log``: ``read_log``'s columns. ``requant_epochs``: the number of epochs completed at each
    re-quantization (0 before the first epoch, ..., the last epoch for the one after it), each
    drawn at e + 0.5, between the rows of epochs e and e + 1. ``final``: ``scheme.json``'s
    totals (``acc``, ``compression``, ``avg_bits``) of the final model, a star after the last row.
    """
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator
    panels = (("test_acc", "test accuracy (%)", "acc"), ("reg", "regularizer B/TP", None),
              ("comp", "compression (x)", "compression"), ("avg_bits", "average bits", "avg_bits"))
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), sharex=True)
    epochs = log["epoch"]
    for ax, (column, label, final_key) in zip(axes.flat, panels):
        ax.plot(epochs, log[column], marker="o" if len(epochs) < 30 else None, ms=3)
        for i, e in enumerate(requant_epochs):
            ax.axvline(e + 0.5, color="tab:red", ls="--", lw=0.8,
                       label="re-quantization" if i == 0 else None)
        if final and final_key and final.get(final_key) is not None:
            ax.plot([epochs[-1] + 0.5], [final[final_key]], "r*", ms=9, label="final model")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if axes[0, 0].get_legend_handles_labels()[0]:
        axes[0, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_tradeoff(rows, path, float_acc=None, title="accuracy vs compression"):
    """A sweep's accuracy against compression, one point per alpha (``sweep.json``'s rows).

    Series: BSQ before finetuning, BSQ after, and training from scratch at BSQ's scheme.
    """
    plt = pyplot()
    rows = sorted(rows, key=lambda r: r["comp"])
    comp = [r["comp"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for key, label, style in (("finetune_acc", "BSQ + finetune", "o-"),
                              ("bsq_acc", "BSQ, before finetune", "s--"),
                              ("scratch_acc", "train from scratch at BSQ's scheme", "^:")):
        points = [(c, r[key]) for c, r in zip(comp, rows) if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points), style, label=label)
    for r in rows:
        y = r.get("finetune_acc", r.get("bsq_acc"))
        if y is not None:
            ax.annotate(f"alpha {r['alpha']:g}", (r["comp"], y), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    if float_acc is not None:
        ax.axhline(float_acc, color="gray", lw=0.8, ls="-.", label="float model")
    ax.set_xlabel("compression 32 TP/TB (x)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _read_json(path):
    """A JSON file, or a one-line ``BSQError`` when it is not one."""
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise BSQError(f"{path} is not valid JSON ({e}): rewrite it or remove it") from None


def _run_args(folder):
    """The ``args`` a checkpoint in ``folder`` was trained with, or {}."""
    path = os.path.join(folder, "checkpoint.pth.tar")
    return (load_checkpoint(path).get("args") or {}) if os.path.isfile(path) else {}


def _scheme_report(folder):
    """``scheme.json`` of a run folder, or a precision-only report from its bit checkpoint."""
    path = os.path.join(folder, "scheme.json")
    if os.path.isfile(path):
        return _read_json(path)
    for name in SCHEME_SOURCES:
        ckpt = os.path.join(folder, name)
        scheme = read_scheme(load_checkpoint(ckpt)) if os.path.isfile(ckpt) else None
        if scheme:
            return {"layers": [{"name": k, "tensor": t, "bits": n[i]} for k, n in scheme.items()
                               for i, t in enumerate(("weight", "bias")) if i == 0 or n[1]]}
    return None


def plot_folder(folder, out=None):
    """Every chart a run or sweep folder supports; returns the PNG paths written.

    ``precision.png`` from ``scheme.json`` (or a bit checkpoint), ``curves.png`` from
    ``log.txt`` (re-quantization epochs from the run's ``--Prun_Int``), ``tradeoff.png`` from
    ``sweep.json``. Raises ``BSQError`` when the folder has none of them.
    """
    if not os.path.isdir(folder):
        raise BSQError(f"{folder} is not a folder: give a checkpoint or sweep folder")
    pyplot()
    out = out or folder
    os.makedirs(out, exist_ok=True)
    try:
        return _plot_folder(folder, out)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise BSQError(f"{folder} holds a file in an unexpected layout ({type(e).__name__}: "
                       f"{e}): check its log.txt, scheme.json and sweep.json") from None


def _plot_folder(folder, out):
    written, name = [], os.path.basename(os.path.normpath(folder))
    report = _scheme_report(folder)
    if report:
        written.append(plot_precision(report, os.path.join(out, "precision.png"),
                                      f"{name}: precision per layer"))
    log_path = os.path.join(folder, "log.txt")
    log = read_log(log_path) if os.path.isfile(log_path) else {"epoch": []}
    if log["epoch"]:
        interval, last = _run_args(folder).get("Prun_Int"), log["epoch"][-1]
        requant, final = [], None
        if interval:
            requant = [*range(0, last, interval), last]
            final = (report or {}).get("totals")
        written.append(plot_curves(log, os.path.join(out, "curves.png"), requant, final,
                                   f"{name}: training curves"))
    sweep_path = os.path.join(folder, "sweep.json")
    if os.path.isfile(sweep_path):
        sweep = _read_json(sweep_path)
        written.append(plot_tradeoff(sweep["rows"], os.path.join(out, "tradeoff.png"),
                                     sweep.get("float_acc"), f"{name}: accuracy vs compression"))
    if not written:
        raise BSQError(f"{folder} has no scheme.json, bit checkpoint, log.txt or sweep.json "
                       "to plot")
    return written
