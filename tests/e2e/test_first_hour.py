"""The end of a finetune run whose model has empty tensors (issue 24): each accuracy is named
with its file and form, each compression with the files that show it, and the charts say the
same; checked against the files the run wrote."""
import contextlib
import io
import json
import math
import re

import pytest

import cifar_finetune
from utils.cli.errors import run_main
from utils.store.checkpoint import checkpoint_state, load_checkpoint, save_checkpoint
from utils.store.epochlog import read_log

from cifar_fixture import make_cifar
from helpers import EMPTY_LAYERS, empty_layers_model


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """One finetune epoch, as the release, of a ResNet-8 with two empty layers, on 40 images."""
    cwd = tmp_path_factory.mktemp("newcomer")
    make_cifar(cwd / "data", "cifar10", n_train=40, n_test=20)
    save_checkpoint(checkpoint_state(empty_layers_model(), epoch=1), str(cwd / "bsq.pth.tar"))
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.chdir(cwd)  # the script's own run_main, in this process (as tests/e2e/test_errors)
        run_main(cifar_finetune.main, cifar_finetune.get_args_parser(),
                 "--depth 8 --model bsq.pth.tar --bin --epochs 1 --lr 0.01 --data-root data "
                 "--checkpoint ft --manualSeed 0 --no-tensorboard".split())
    return cwd / "ft", out.getvalue()


def test_the_end_of_a_finetune_run_names_each_accuracy_with_its_file_and_form(finetuned):
    folder, stdout = finetuned
    figures = json.loads(stdout.splitlines()[-1])
    scheme = json.loads((folder / "scheme.json").read_text())
    log = read_log(str(folder / "log.txt"))
    end = stdout[stdout.index("result in ft, the test accuracy of each file:"):].splitlines()
    best, bits, floats = (re.match(r" +([\d.]+)%  (\S+) +(.*)", line).groups() for line in end[1:4])
    assert best[1] == "model_best.pth.tar" and float(best[0]) == round(figures["best_acc"], 2)
    if load_checkpoint(str(folder / "model_best.pth.tar"))["epoch"] == 1:
        assert float(best[0]) == round(log["test_acc"][0], 2)
        assert best[2] == ("epoch 1 in finetune form, without the classifier bias, as trained "
                           "(its test_acc in log.txt, best_acc of the JSON line)")
    else:
        assert best[2] == ("the loaded model in finetune form, without the classifier bias, "
                           "which no epoch beat (best_acc of the JSON line)")
    assert bits[1:] == ("best_bin.pth.tar", "the same weights in bit representation, the "
                        "classifier bias back in (acc of the JSON line, scheme.json)")
    assert float(bits[0]) == round(figures["acc"], 2) == round(scheme["totals"]["acc"], 2)
    assert floats[1] == "best_float.pth.tar"
    assert end[4].startswith("  best_bin and best_float record acc") and "last epoch's" in end[4]


def test_both_compressions_of_the_run_are_named_where_they_are_shown(finetuned):
    folder, stdout = finetuned
    figures = json.loads(stdout.splitlines()[-1])
    totals = json.loads((folder / "scheme.json").read_text())["totals"]
    logged = read_log(str(folder / "log.txt"))["comp"][-1]
    finetune = totals["finetune_form"]["compression"]
    assert math.isclose(logged, finetune, rel_tol=1e-5) and logged > totals["compression"] + 0.1
    assert figures["comp"] == round(totals["compression"], 4)
    note = [line for line in stdout.splitlines() if line.startswith("The 2 empty tensors")][-1]
    assert f"in finetune form they count 0 bits: {totals['finetune_form']['avg_bits']:.3f} bits " \
           f"per weight, compression {finetune:.2f}x (cifar_finetune.py's log.txt" in note
    rows = [line for line in stdout.splitlines() if line.endswith("empty: every plane zero")]
    assert [row.split()[0] for row in rows[-2:]] == list(EMPTY_LAYERS)


def test_the_charts_of_the_run_say_the_same(finetuned, monkeypatch):
    pytest.importorskip("matplotlib")
    import utils.report.plots as plots
    folder, _ = finetuned
    captions = {}

    def save(fig, path):
        captions[path.rsplit("/", 1)[-1]] = " ".join(
            t.get_text() for t in [fig._suptitle, *(ax.title for ax in fig.axes)] if t)
        plots.pyplot().close(fig)
        return path

    monkeypatch.setattr(plots, "_save", save)
    plots.plot_folder(str(folder), str(folder))
    curves, precision = (" ".join(captions[k].split()) for k in ("curves.png", "precision.png"))
    assert "compression and bits in finetune form: an empty tensor counts 0 bits; scheme.json " \
           "and precision.png count it at 1 bit" in curves
    assert "hatched: 2 empty tensors" in precision and "in finetune form" in precision
