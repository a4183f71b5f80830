"""The scheme report and scheme.json: their totals are the model's own size accounting."""
import json
import math
import os

import pytest
import torch

from utils.report.scheme import report_scheme, scheme_dict, scheme_report

from helpers import mixed_model


@pytest.mark.parametrize("form", ["bits", "finetune", "float"])
def test_totals_are_the_models_accounting(form):
    model = mixed_model(form="bits" if form == "float" else form)
    if form == "float":
        model.to_float_()
    report = scheme_dict(model, acc=12.5)
    total, bits = model.size()
    zero = sum(nbits == 0 for _, m in model.quant_layers() for _, nbits in m.sizes())
    same = {"TB": bits, "avg_bits": model.avg_bits(), "compression": model.compression()}
    assert report["totals"] == {"TP": total, "TB": bits, "avg_bits": model.avg_bits(),
                                "compression": model.compression(), "acc": 12.5,
                                "empty": 0 if form == "float" else zero,  # corrected: 0 bits
                                "finetune_form": None if form == "float" else same,
                                "MACs": sum(r["macs"] for r in report["costs"]),
                                "BOPs": sum(r["bops"] for r in report["costs"])}
    rows = report["layers"]
    assert sum(math.prod(r["shape"]) for r in rows) == total
    assert sum(math.prod(r["shape"]) * r["bits"] for r in rows) == bits
    assert sum(r["share"] for r in rows) == pytest.approx(100.0)
    names = [(n, s) for n, m in model.quant_layers() for s in m.slots]
    assert [(r["name"], r["tensor"]) for r in rows] == names


def test_ones_per_plane_msb_first():
    model = mixed_model()
    report = scheme_dict(model)
    layer = dict(model.quant_layers())["layer2.0.conv1"]
    row = next(r for r in report["layers"] if r["name"] == "layer2.0.conv1")
    diff = (layer.pweight - layer.nweight).reshape(-1, layer.nbits["weight"])  # (numel, N)
    expected = [100.0 * int(diff[:, i].count_nonzero()) / diff.shape[0]
                for i in range(diff.shape[1])]
    assert row["bits"] == layer.nbits["weight"] == len(row["ones"])
    assert row["ones"] == pytest.approx(expected)
    zero = next(r for r in report["layers"] if r["bits"] == 0)
    assert zero["ones"] == [] and zero["share"] == 0.0
    assert all(r["ones"] is None for r in scheme_dict(mixed_model(form="finetune"))["layers"])


def test_text_report_has_every_tensor_and_the_totals():
    model = mixed_model()
    total, bits = model.size()
    lines = scheme_report(model, acc=87.25).splitlines()
    sites, costs = len(model.activation_report()), len(model.costs())
    assert len(lines) == (1 + sum(len(m.slots) for _, m in model.quant_layers()) + 2 + sites
                          + 2 + costs + 1)
    assert f"{model.bops() / 1e6:.4g}M BOPs per image" in lines[-1]
    assert any(line.startswith("fc (bias)") for line in lines)
    assert f"TP {total} weights, TB {bits} bits" in lines[-1]
    assert f"compression {model.compression():.2f}x" in lines[-1]
    assert lines[-1].endswith("test accuracy 87.25%")
    assert "accuracy" not in scheme_report(model).splitlines()[-1]


def test_scheme_json_is_written_atomically_with_the_same_content_as_the_report(tmp_path, capsys):
    model = mixed_model()
    path = tmp_path / "scheme.json"
    returned = report_scheme(model, str(tmp_path), acc=50.0)
    assert capsys.readouterr().out == scheme_report(model, 50.0) + "\n"
    assert json.loads(path.read_text()) == json.loads(json.dumps(scheme_dict(model, 50.0)))
    assert json.loads(path.read_text()) == json.loads(json.dumps(returned))
    assert os.listdir(tmp_path) == ["scheme.json"]
    assert json.loads(path.read_text())["scheme"] == model.scheme()


def test_the_json_line_gives_each_figure_to_4_decimals(capsys):
    """An accuracy counted in fp32 prints as 33.3333, not 33.33333206176758; the compression of a
    model without bits stays null."""
    from utils.report.console import summary
    model = mixed_model()
    acc = float(torch.tensor(100 / 3, dtype=torch.float32))  # 33.33333206176758
    figures = summary(model, acc, acc, "c.pth.tar", acc5=acc, float_acc=None)
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == figures
    assert (line["acc"], line["best_acc"], line["acc5"], line["float_acc"]) == (
        33.3333, 33.3333, 33.3333, None)
    assert line["comp"] == round(model.compression(), 4)


def test_each_epoch_line_gives_the_test_passs_top_5():
    from utils.report.console import epoch_line
    row = {"epoch": 3, "lr": 0.01, "train_loss": 0.5, "train_acc": 80.0, "reg": 12.0,
           "test_loss": 0.6, "test_acc": 75.5, "test_acc5": 97.25, "comp": 5.0, "avg_bits": 6.4,
           "seconds": 9.0}
    assert "test loss 0.6000 acc  75.50 top-5  97.25  comp 5.00x" in epoch_line(row, 9)
    assert "acc  75.50  comp 5.00x" in epoch_line({**row, "test_acc5": None}, 9)
