"""The charts of a run folder, and the one-line error when matplotlib (optional) is missing."""
import argparse
import json
import os

import pytest
import torch

from models import build_model
from utils.errors import BSQError
from utils.report.scheme import report_scheme
from utils.store.checkpoint import checkpoint_state, save_checkpoint
from utils.store.epochlog import COLUMNS, EpochLog, read_log

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_folder(tmp_path):
    """A BSQ run folder as the scripts leave it: checkpoint (with --Prun_Int 2), a 5-epoch
    log.txt, scheme.json, and a sweep.json beside them."""
    torch.manual_seed(0)
    args = argparse.Namespace(arch="resnet", depth=8, act=4, Prun_Int=2)
    model = build_model(depth=8)
    scheme = {name: [i % 4 + 2, 0] for i, (name, _) in enumerate(model.quant_layers())}
    scheme["fc"] = [6, 4]
    model.to_bits_(scheme)
    save_checkpoint(checkpoint_state(model, epoch=5, acc=30.0, best_acc=35.0, args=args),
                    str(tmp_path / "checkpoint.pth.tar"))
    log = EpochLog(str(tmp_path / "log.txt"))
    for epoch in range(1, 6):
        log.append({"epoch": epoch, "lr": 0.1, "train_loss": 2.0 / epoch, "train_acc": 10.0 * epoch,
                    "reg": 100.0 / epoch, "test_loss": 2.1 / epoch, "test_acc": 9.0 * epoch,
                    "comp": 4.0 + epoch, "avg_bits": 32 / (4.0 + epoch), "seconds": 1.0})
    report_scheme(model, str(tmp_path), acc=30.0)
    rows = [{"alpha": a, "avg_bits": 8 / (1 + a), "comp": 4 * (1 + a), "bsq_acc": 50 - a,
             "finetune_acc": 60 - a, "scratch_acc": 55 - a} for a in (1.0, 2.0, 3.0)]
    (tmp_path / "sweep.json").write_text(json.dumps({"rows": rows, "float_acc": 70.0}))
    return tmp_path


def test_read_log_parses_every_column(run_folder):
    log = read_log(str(run_folder / "log.txt"))
    assert tuple(log) == COLUMNS
    assert log["epoch"] == [1, 2, 3, 4, 5] and log["test_acc"][2] == pytest.approx(27.0)


def test_plot_folder_writes_non_empty_pngs(run_folder, tmp_path_factory):
    pytest.importorskip("matplotlib")
    from utils.report.plots import plot_folder
    out = tmp_path_factory.mktemp("pngs")
    written = plot_folder(str(run_folder), str(out))
    assert sorted(os.path.basename(p) for p in written) == ["curves.png", "precision.png",
                                                            "tradeoff.png"]
    for path in written:
        data = open(path, "rb").read()
        assert data.startswith(PNG) and len(data) > 5000


def test_precision_chart_from_a_bit_checkpoint_alone(run_folder):
    pytest.importorskip("matplotlib")
    from utils.report.plots import plot_folder
    for name in ("scheme.json", "log.txt", "sweep.json"):
        os.remove(run_folder / name)
    assert [os.path.basename(p) for p in plot_folder(str(run_folder))] == ["precision.png"]


def test_empty_or_malformed_folders_are_one_line_errors(tmp_path):
    from utils.report.plots import plot_folder
    with pytest.raises(BSQError):
        plot_folder(str(tmp_path))
    (tmp_path / "sweep.json").write_text('{"rows": [{"alpha": 1.0}]}')
    with pytest.raises(BSQError):
        plot_folder(str(tmp_path))


def test_a_panel_is_constant_only_if_the_final_model_shares_its_value():
    """Two epochs at 4x, then a final re-quantization to 4.5x: the compression and bits panels
    stay (with the final star), and the caption does not call them constant."""
    pytest.importorskip("matplotlib")
    from utils.report.plots import curves_figure
    log = {"epoch": [1, 2], "test_acc": [50.0, 60.0], "reg": [3.0, 2.0], "comp": [4.0, 4.0],
           "avg_bits": [8.0, 8.0], "train_loss": [1.0, 0.9], "test_loss": [1.1, 1.0]}

    def texts(final):
        fig = curves_figure(log, final=final)
        return fig._suptitle.get_text(), [ax.get_ylabel() for ax in fig.axes if ax.get_visible()]

    caption, labels = texts({"acc": 60.0, "compression": 4.5, "avg_bits": 7.1})
    assert "constant" not in caption and "compression (x)" in labels and "average bits" in labels
    caption, labels = texts({"acc": 60.0, "compression": 4.0, "avg_bits": 8.0})
    assert "constant over the run: compression 4, average bits 8" in caption
    assert "compression (x)" not in labels


def test_tradeoff_draws_budgets_apart_from_the_alpha_lines():
    """Every series at its rows' points: the alphas joined, each budget's BSQ, finetuned and
    from-scratch accuracy as points of their own, against compression and against GBOPs."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from utils.report.plots import _tradeoff_panel
    alphas = [{"alpha": a, "target": None, "comp": 4 * (1 + a), "bops": 2e9 / (1 + a),
               "bsq_acc": 50 - a, "finetune_acc": 60 - a, "scratch_acc": 55 - a}
              for a in (1.0, 2.0)]
    budget = {"alpha": None, "target": "compression 10", "comp": 10.4, "bops": 1.2e9,
              "bsq_acc": 41.0, "finetune_acc": 44.0, "scratch_acc": 46.0}
    for key, unit in (("comp", 1), ("bops", 1e-9)):
        fig, ax = plt.subplots()
        _tradeoff_panel(ax, [budget, *alphas], [], None, key, unit)
        drawn = {line.get_label(): list(zip(line.get_xdata(), line.get_ydata()))
                 for line in ax.get_lines()}
        plt.close(fig)
        x = budget[key] * unit
        assert drawn["BSQ to a budget + finetune"] == [(x, 44.0)]
        assert drawn["BSQ to a budget, before finetune"] == [(x, 41.0)]
        assert drawn["train from scratch at a budget's scheme"] == [(x, 46.0)]
        ordered = sorted(alphas, key=lambda r: r[key])
        assert drawn["train from scratch at BSQ's scheme"] == [
            (r[key] * unit, r["scratch_acc"]) for r in ordered]


def test_a_sweep_folder_replots_its_uniform_points(tmp_path, monkeypatch):
    """plots.py on a sweep's folder draws what sweep.py drew: its rows and its uniform points."""
    from utils.report import plots
    sweep = {"rows": [{"alpha": 1.0, "comp": 8.0, "bsq_acc": 50.0, "finetune_acc": 60.0}],
             "uniform": [{"bits": 4, "comp": 8.0, "convert_acc": 40.0, "finetune_acc": 58.0}],
             "float_acc": 70.0}
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    drawn = {}
    monkeypatch.setattr(plots, "plot_tradeoff", lambda rows, path, float_acc, title, uniform=():
                        drawn.update(rows=rows, uniform=uniform, float_acc=float_acc) or path)
    plots.plot_folder(str(tmp_path))
    assert drawn == {"rows": sweep["rows"], "uniform": sweep["uniform"], "float_acc": 70.0}
