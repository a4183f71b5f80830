"""PNG charts of BSQ runs: per-layer precision, training curves, and a sweep's trade-off.

matplotlib is in ``requirements.txt`` but nothing else needs it: without it the plotting functions
raise ``MissingExtra``, a one-line ``BSQError`` with the install command.
"""
import json
import os
import textwrap

from utils.errors import BSQError
from utils.report.console import times
from utils.report.scheme import finetune_note
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


def _wrapped(lines, fig):
    """``lines`` as one caption, each wrapped to the width of ``fig``."""
    chars = int(fig.get_figwidth() * 12)  # about as many characters of 8-9 pt text as fit
    return "\n".join(textwrap.fill(line, chars) for line in lines)


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def precision_figure(report, title="precision per layer"):
    """Bar chart of each quantized tensor's precision, from a ``scheme_dict`` (``scheme.json``).

    Bars are labelled with their share of the model's bits when the report has it; an empty
    tensor (every plane zero) is hatched and labelled "empty", and the caption says how it is
    counted here and in finetune form (``utils.report.scheme.finetune_note``).
    """
    plt = pyplot()
    layers = report["layers"]
    labels = [r["name"] if r["tensor"] == "weight" else f"{r['name']} (bias)" for r in layers]
    bits = [r["bits"] for r in layers]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(layers) + 2), 4.6))
    bars = ax.bar(range(len(layers)), bits, color=["tab:blue" if r["tensor"] == "weight"
                                                   else "tab:orange" for r in layers])
    for bar, row in zip(bars, layers):
        top = (bar.get_x() + bar.get_width() / 2, bar.get_height())
        if row.get("empty"):
            bar.set(facecolor="white", edgecolor="tab:gray", hatch="///")
            ax.annotate("empty", top, ha="center", va="bottom", fontsize=6, rotation=90)
        elif row.get("share") is not None:
            ax.annotate(f"{row['share']:.0f}%", top, ha="center", va="bottom", fontsize=6)
    ax.set_xticks(range(len(layers)), labels, rotation=90, fontsize=7)
    ax.set_ylim(0, max(max(bits, default=0), 8) + 1)
    ax.set_ylabel("bits (weight precision N)")
    totals = report.get("totals") or {}
    facts = [f"{totals['avg_bits']:.2f} bits avg" if totals.get("avg_bits") is not None else "",
             f"{totals['compression']:.2f}x" if totals.get("compression") is not None else "",
             f"acc {totals['acc']:.2f}%" if totals.get("acc") is not None else ""]
    lines = [", ".join([title, *filter(None, facts)])]
    if any(r.get("share") is not None for r in layers):
        lines.append("(bar labels: the tensor's share of the model's bits)")
    empty = [r for r in layers if r.get("empty")]
    if empty:
        counted = "at 1 bit per weight, as the release does in bits form" \
            if any(r["bits"] for r in empty) else "at 0 bits"
        lines.append(f"hatched: {len(empty)} empty tensors (every plane zero), counted {counted}")
    finetune = totals.get("finetune_form")
    if finetune_note(report):
        lines.append(f"in finetune form (cifar_finetune.py's log.txt, curves.png) they count 0 "
                     f"bits: {finetune['avg_bits']:.2f} bits avg, "
                     f"{times(finetune['compression'])}")
    ax.set_title(_wrapped(lines, fig), fontsize=8)
    return fig


def plot_precision(report, path, title="precision per layer"):
    """``precision_figure`` as a PNG at ``path``."""
    return _save(precision_figure(report, title), path)


PANELS = ((("test_acc",), "test accuracy (%)", "acc"), (("reg",), "regularizer B/TP", None),
          (("comp",), "compression (x)", "compression"),
          (("avg_bits",), "average bits", "avg_bits"))  # (log columns, label, final totals key)
LOSS_PANEL = (("train_loss", "test_loss"), "loss (train, test)", None)


def _constant(log, panel, final):
    """Whether ``panel``'s column keeps one value over several epochs and the final model (its
    ``final`` totals, when given) has it too: a re-quantization after the last epoch changes the
    compression and the bits."""
    (column, *_), _, final_key = panel
    values = set(log[column])
    if len(log["epoch"]) < 2 or len(values) != 1:
        return False
    end = (final or {}).get(final_key) if final_key else None
    return end is None or abs(end - values.pop()) <= 1e-9 * max(1.0, abs(end))


def curves_figure(log, requant_epochs=(), final=None, title="training curves", note=""):
    """Test accuracy, regularizer B/TP, compression and average bits against epoch.

    ``log``: ``read_log``'s columns. ``requant_epochs``: the number of epochs completed at each
    re-quantization (0 before the first epoch, ..., the last epoch for the one after it), each
    drawn at e + 0.5, between the rows of epochs e and e + 1. ``final``: ``scheme.json``'s
    totals (``acc``, ``compression``, ``avg_bits``) of the final model, a star after the last row.
    A panel whose column does not change over several epochs nor in the final model (a float
    run's regularizer, compression and bits; a finetune run's scheme) is left out and its value
    given in the caption, with the loss panel in its place; a run of one or two epochs shows each
    value.
    ``note``: a last line of the caption.
    """
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator
    epochs = log["epoch"]
    constant = [p for p in PANELS[1:] if _constant(log, p, final)]
    panels = [p for p in PANELS if p not in constant]
    if constant:
        panels.append(LOSS_PANEL)
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, 2 if len(panels) > 1 else 1, figsize=(9, 1.2 + 2.8 * rows),
                             squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for i, (ax, (columns, label, final_key)) in enumerate(zip(axes.flat, panels)):
        for column in columns:
            ax.plot(epochs, log[column], marker="o" if len(epochs) < 30 else None, ms=3,
                    label=column.replace("_", " ") if len(columns) > 1 else None)
            if len(epochs) < 3:
                for x, y in zip(epochs, log[column]):
                    ax.annotate(f"{y:.4g}", (x, y), textcoords="offset points", xytext=(5, 3),
                                fontsize=7)
        for k, e in enumerate(requant_epochs):
            ax.axvline(e + 0.5, color="tab:red", ls="--", lw=0.8,
                       label="re-quantization" if k == 0 else None)
        if final and final_key and final.get(final_key) is not None:
            ax.plot([epochs[-1] + 0.5], [final[final_key]], "r*", ms=9, label="final model")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.set_xlim(epochs[0] - 1, epochs[-1] + 1)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if (i == 0 or len(columns) > 1) and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)  # the first panel's, and the loss panel's two series
    caption = [title, f"{len(epochs)} epoch{'s' if len(epochs) > 1 else ''}"]
    if constant:
        caption.append("constant over the run: " + ", ".join(
            f"{label.split(' (')[0]} {log[columns[0]][0]:.4g}" for columns, label, _ in constant))
    fig.suptitle(_wrapped([", ".join(caption[:2]), *caption[2:], *filter(None, [note])], fig),
                 fontsize=9)
    return fig


def plot_curves(log, path, requant_epochs=(), final=None, title="training curves", note=""):
    """``curves_figure`` as a PNG at ``path``."""
    return _save(curves_figure(log, requant_epochs, final, title, note), path)


def plot_tradeoff(rows, path, float_acc=None, title="accuracy vs compression", uniform=()):
    """A sweep's accuracy against compression, one point per alpha (``sweep.json``'s rows), and
    beside it against bit-operations per image where the rows have them (``bops``).

    Series: BSQ before finetuning, BSQ after, and training from scratch at BSQ's scheme, as
    lines over the alphas; the rows of budgets (``target``) as points of their own, the same three
    series unjoined; the ``uniform`` points (``sweep.json``'s ``uniform``: a precision for every
    layer, finetuned or, BSQ's starting point, as converted) and the float model as a line.
    """
    plt = pyplot()
    axes = [("comp", "compression 32 TP/TB (x)", 1)]
    if any(r.get("bops") for r in [*rows, *uniform]):
        axes.append(("bops", "bit-operations per image (GBOPs)", 1e-9))
    fig, panels = plt.subplots(1, len(axes), figsize=(6.5 * len(axes), 4.5), squeeze=False)
    for ax, (key, label, unit) in zip(panels[0], axes):
        _tradeoff_panel(ax, rows, uniform, float_acc, key, unit)
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if key == "bops":
        ax.invert_xaxis()  # fewer bit-operations to the right, as more compression is
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _tradeoff_panel(ax, rows, uniform, float_acc, x, unit):
    """One panel of ``plot_tradeoff``: the points against ``x`` scaled by ``unit``; every row has
    a compression, only some may have ``bops`` (a sweep of an earlier version counted none)."""
    rows = sorted((r for r in rows if x == "comp" or r.get(x) is not None), key=lambda r: r[x])
    alphas = [r for r in rows if r.get("target") is None]
    targets = [r for r in rows if r.get("target") is not None]
    for series, key, label, style in (
            (alphas, "finetune_acc", "BSQ + finetune", "o-"),
            (alphas, "bsq_acc", "BSQ, before finetune", "s--"),
            (alphas, "scratch_acc", "train from scratch at BSQ's scheme", "^:"),
            (targets, "finetune_acc", "BSQ to a budget + finetune", "*"),
            (targets, "bsq_acc", "BSQ to a budget, before finetune", "x"),
            (targets, "scratch_acc", "train from scratch at a budget's scheme", "^")):
        points = [(r[x] * unit, r[key]) for r in series if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points), style, label=label, **({"ms": 10} if style == "*" else {}))
    for r in rows:
        y = r.get("finetune_acc", r.get("bsq_acc"))
        if y is not None:
            label = f"alpha {r['alpha']:g}" if r.get("target") is None else r["target"]
            ax.annotate(label, (r[x] * unit, y), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    points = [(u[x] * unit, u["convert_acc"] if u["finetune_acc"] is None else u["finetune_acc"],
               u["bits"]) for u in sorted(uniform, key=lambda u: u.get(x) or 0)
              if u.get(x) is not None]
    if points:
        ax.plot([c for c, _, _ in points], [a for _, a, _ in points], "D", color="black",
                label="uniform precision (+ finetune)")
        for c, a, bits in points:
            ax.annotate(f"{bits} bits", (c, a), textcoords="offset points", xytext=(4, -10),
                        fontsize=7)
    if float_acc is not None:
        ax.axhline(float_acc, color="gray", lw=0.8, ls="-.", label="float model")


def _read_json(path):
    """A JSON file, or a one-line ``BSQError`` when it is not one."""
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise BSQError(f"{path} is not valid JSON ({e}): rewrite it or remove it") from None


def _run_checkpoint(folder):
    """The ``checkpoint.pth.tar`` of ``folder`` (its ``args``: the run's flags; its ``arch``:
    the form it trained), or {}."""
    path = os.path.join(folder, "checkpoint.pth.tar")
    return load_checkpoint(path) if os.path.isfile(path) else {}


def _finetune_caption(report):
    """What a finetune run's curves count differently from its ``scheme.json`` (``report``), or
    "" when they count the same."""
    if not report or not finetune_note(report):
        return ""
    totals = report["totals"]
    return (f"compression and bits in finetune form: an empty tensor counts 0 bits; scheme.json "
            f"and precision.png count it at 1 bit, as the release does in bits form: "
            f"{totals['avg_bits']:.3f} bits, {times(totals['compression'])}")


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
        ckpt = _run_checkpoint(folder)
        interval, last = (ckpt.get("args") or {}).get("Prun_Int"), log["epoch"][-1]
        requant, final = [], None
        if interval:
            requant = [*range(0, last, interval), last]
            final = (report or {}).get("totals")
        finetune = (ckpt.get("arch") or {}).get("form") == "finetune"
        written.append(plot_curves(log, os.path.join(out, "curves.png"), requant, final,
                                   f"{name}: training curves",
                                   _finetune_caption(report) if finetune else ""))
    sweep_path = os.path.join(folder, "sweep.json")
    if os.path.isfile(sweep_path):
        sweep = _read_json(sweep_path)
        written.append(plot_tradeoff(sweep["rows"], os.path.join(out, "tradeoff.png"),
                                     sweep.get("float_acc"), f"{name}: accuracy vs compression",
                                     uniform=sweep.get("uniform", ())))
    if not written:
        raise BSQError(f"{folder} has no scheme.json, bit checkpoint, log.txt or sweep.json "
                       "to plot")
    return written
