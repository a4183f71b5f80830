"""What a newcomer meets in the first hour (issue 24): advice that leads somewhere, a folder in
use refused before any loading, a broken installation named as such, empty tensors marked and
both of their compressions labelled, and the small things: help, default folder, misspelled
flags, --data-root, several folders to plot, one-epoch and float curves, .onnx ignored."""
import contextlib
import copy
import fcntl
import importlib
import io
import os
import shutil
import subprocess
import sys

import pytest
import torch

import utils.data.cifar as data
from utils.cli.errors import run_main
from utils.quant.corrections import CORRECTED
from utils.report.scheme import scheme_dict, scheme_report
from utils.store.epochlog import COLUMNS

from helpers import EMPTY_LAYERS, REPO, empty_layers_model


def run(script, argv):
    """``script``'s ``run_main`` on ``argv`` in this process: (exit status, stdout, stderr)."""
    module = importlib.import_module(script)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_main(module.main, module.get_args_parser(), argv)
            status = 0
        except SystemExit as e:
            status = e.code
    return status, out.getvalue(), err.getvalue()


def refused(script, argv):
    """The one error line of ``script`` on ``argv``, which must fail with it."""
    status, _, err = run(script, argv)
    return one_line(status, err)


def one_line(status, err):
    """The one error line of a failed script (exit status 2, no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def run_captured(main, parser):
    """``run_main`` of ``main`` (with ``parser``'s flags): (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as stop:
        run_main(main, parser, ["."])
    return stop.value.code, err.getvalue()


def snapshot(root):
    """Every file under ``root`` with its bytes."""
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(root) for f in files}


def offline(url, download_root, md5):
    """The downloader of a machine without internet."""
    raise OSError("offline")


# 1. convert.py's advice -------------------------------------------------------------------------

def test_a_folder_holding_a_run_gets_advice_the_script_can_follow(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "checkpoint.pth.tar").write_bytes(b"a run")
    for extra in ([], ["--resume", "out/checkpoint.pth.tar"]):  # convert.py accepts, ignores it
        line = refused("convert", ["--model", "f.pth.tar", "--checkpoint", "out", *extra])
        assert "already holds a run" in line and "--overwrite" in line
        assert "--resume" not in line
    line = refused("cifar_finetune", ["--model", "f.pth.tar", "--bin", "--checkpoint", "out"])
    assert "continue it with --resume out/checkpoint.pth.tar" in line


# 2. the lock, before any loading ----------------------------------------------------------------

def test_a_folder_in_use_is_refused_before_the_model_or_the_data_is_loaded(tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "download_and_extract_archive", offline)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "log.txt").write_text("\t".join(COLUMNS) + "\n")
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT)  # another run holds the folder
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"4242\n")
        before = snapshot(folder)
        # neither the model nor the data exists: reading either would fail with another line
        argv = ["--depth", "8", "--bin", "--model", "missing.pth.tar", "--data-root", "nodata",
                "--checkpoint", "run", "--overwrite"]
        line = refused("cifar_prune_STE", argv)
        # its facts: the folder, the other run's PID, the fix
        assert "--checkpoint run" in line and "PID 4242" in line and "pick another folder" in line
        assert snapshot(folder) == before
    finally:
        os.close(fd)
    line = refused("cifar_prune_STE", argv)  # free now: it fails at the data
    assert "no CIFAR-10 data in nodata" in line
    assert snapshot(folder) == {"log.txt": before["log.txt"]}  # the lock it took went with it


# 3. the installation ----------------------------------------------------------------------------

def test_a_torchvision_that_does_not_fit_torch_is_named_with_the_fix(tmp_path, monkeypatch,
                                                                       cifar10_root):
    fake = tmp_path / "site" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("from . import _meta_registrations\n")
    (fake / "_meta_registrations.py").write_text(  # what torchvision built for another torch does
        "import torch\n\n\n@torch.library.register_fake('torchvision::nms_of_another_torch')\n"
        "def meta_nms(dets, scores, iou_threshold):\n    return dets\n")
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.chdir(tmp_path)
    status, _, err = run("cifar_prune_STE", ["--depth", "8", "--loader", "release", "--data-root",
                                             cifar10_root, "--checkpoint", "run"])
    line = one_line(status, err)
    assert "importing torchvision failed (RuntimeError: operator torchvision::" in line
    assert "torch 2" in line and "do not work together" in line
    assert "pip install --force-reinstall torch torchvision --index-url" in line
    assert "please report" not in line and not (tmp_path / "run").exists()


def test_a_missing_package_and_a_gpu_without_driver_are_the_installations():
    def cases():
        yield "import a_package_nobody_installed", "a_package_nobody_installed is not installed"
        yield "raise RuntimeError('Found no NVIDIA driver on your system.')", "CUDA cannot be used"
        yield "raise AssertionError('Torch not compiled with CUDA enabled')", "CUDA cannot be used"

    parser = importlib.import_module("plots").get_args_parser()
    for code, words in cases():
        line = one_line(*run_captured(lambda args, code=code: exec(code), parser))
        assert words in line and "please report" not in line, line
    status, err = run_captured(lambda args: importlib.import_module("utils.no_such_module"),
                               parser)
    assert status == 1 and "please report" in err  # a module of ours that is missing: a bug


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a usable GPU")
def test_a_cuda_build_without_a_driver_is_named_with_the_fix(tmp_path, monkeypatch,
                                                            cifar10_root):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as a machine whose driver
    monkeypatch.chdir(tmp_path)                                      # fails when first used
    status, _, err = run("convert", ["--depth", "8", "--model", "m.pth.tar", "--data-root",
                                     cifar10_root, "--checkpoint", "out"])
    line = one_line(status, err)
    assert "CUDA cannot be used here (" in line  # no driver; with a CPU build: not compiled
    assert "CUDA_VISIBLE_DEVICES=" in line and not (tmp_path / "out").exists()


# 4-6. empty tensors and their two compressions ----------------------------------------------------

def test_empty_tensors_are_marked_and_both_compressions_named():
    model = empty_layers_model()
    report = scheme_dict(model, acc=50.0)
    assert [r["name"] for r in report["layers"] if r["empty"]] == list(EMPTY_LAYERS)
    assert all(r["bits"] == 1 for r in report["layers"] if r["empty"])  # the release's 1 bit
    finetune = copy.deepcopy(model).to_finetune_()
    total, bits = finetune.size()
    assert report["totals"]["empty"] == 2
    assert report["totals"]["finetune_form"] == {"TB": bits, "avg_bits": bits / total,
                                                 "compression": finetune.compression()}
    assert finetune.compression() > model.compression()
    text = scheme_report(model, acc=50.0).splitlines()
    marked = [line.split()[0] for line in text if line.endswith("empty: every plane zero")]
    assert marked == list(EMPTY_LAYERS)
    note = text[-1]
    assert note.startswith("The 2 empty tensors count 1 bit per weight here")
    assert f"compression {finetune.compression():.2f}x" in note and "log.txt" in note
    assert "scheme.json" in note and "row 3" in note
    corrected = scheme_dict(empty_layers_model(CORRECTED))  # precision 0 in every form: one figure
    assert corrected["totals"]["empty"] == 2
    assert corrected["totals"]["finetune_form"]["TB"] == corrected["totals"]["TB"]
    assert "empty tensors count" not in scheme_report(empty_layers_model(CORRECTED))


def test_the_precision_chart_hatches_empty_tensors_and_gives_the_finetune_figures():
    pytest.importorskip("matplotlib")
    from utils.report.plots import precision_figure
    report = scheme_dict(empty_layers_model(), acc=50.0)
    fig = precision_figure(report)
    ax = fig.axes[0]
    hatched = [bar.get_hatch() is not None for bar in ax.patches]
    assert hatched == [r["empty"] for r in report["layers"]] and sum(hatched) == 2
    assert [t.get_text() for t in ax.texts].count("empty") == 2
    title = " ".join(ax.get_title().split())
    assert "hatched: 2 empty tensors" in title and "at 1 bit per weight" in title
    finetune = report["totals"]["finetune_form"]
    assert f"in finetune form (cifar_finetune.py's log.txt, curves.png) they count 0 bits: " \
           f"{finetune['avg_bits']:.2f} bits avg, {finetune['compression']:.2f}x" in title


# 7. the small ones -------------------------------------------------------------------------------

@pytest.mark.parametrize("script", ["cifar_train", "cifar_prune_STE", "cifar_finetune", "convert",
                                    "export", "sweep"])
def test_a_flag_without_a_value_shows_no_default(script):
    parser = importlib.import_module(script).get_args_parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.nargs == 0 and action.help:
            assert "(default:" not in formatter._get_help_string(action), action.dest


@pytest.mark.parametrize("flags, folder", [
    ("--depth 8", "checkpoints/cifar10/resnet-8"),
    ("", "checkpoints/cifar10/resnet-20"),
    ("-d cifar100 -a wrn --depth 16 --widen-factor 2", "checkpoints/cifar100/wrn-16-2"),
    ("-a vgg11_bn", "checkpoints/cifar10/vgg11_bn")])
def test_pretraining_writes_to_a_folder_named_after_the_network(flags, folder, tmp_path,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "download_and_extract_archive", offline)
    os.makedirs(folder)
    open(os.path.join(folder, "checkpoint.pth.tar"), "w").close()  # a run there: refused
    line = refused("cifar_train", [*flags.split(), "--data-root", "nodata"])
    assert line.startswith(f"error: --checkpoint {folder} already holds a run")


@pytest.mark.parametrize("typed, meant", [("--Prun-Int", "--Prun_Int"), ("--shedule", "--schedule"),
                                          ("--train_batch", "--train-batch"),
                                          ("--overwirte", "--overwrite")])
def test_a_misspelled_flag_gets_the_closest_one(typed, meant, capsys):
    with pytest.raises(SystemExit) as stop:
        importlib.import_module("cifar_prune_STE").get_args_parser().parse_args([typed, "1"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert f"unrecognized arguments: {typed} 1: did you mean {meant}? (see" in err


def test_an_unknown_flag_far_from_any_gets_no_guess(capsys):
    with pytest.raises(SystemExit):
        importlib.import_module("cifar_prune_STE").get_args_parser().parse_args(["--banana"])
    assert "did you mean" not in capsys.readouterr().err


def test_a_data_root_at_the_dataset_folder_itself_names_its_parent(cifar10_root, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setattr(data, "download_and_extract_archive", pytest.fail)
    inside = os.path.join(cifar10_root, "cifar-10-batches-py")
    with pytest.raises(data.DataError, match=f"give its parent, --data-root {cifar10_root}$"):
        data.load_cifar("cifar10", inside + "/", train=False)
    loose = tmp_path / "batches"  # the batch files, renamed folder
    shutil.copytree(inside, loose)
    with pytest.raises(data.DataError, match="holds the CIFAR-10 batch files themselves.*move "
                                             f"them into {loose}/cifar-10-batches-py/"):
        data.load_cifar("cifar10", str(loose), train=True)
    assert len(data.load_cifar("cifar10", cifar10_root, train=False)[1]) > 0


def test_plots_takes_several_folders(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import utils.report.plots as plots
    from utils.report.scheme import report_scheme

    def save(fig, path):  # the charts are not what is tested here: an empty file is quicker
        plots.pyplot().close(fig)
        open(path, "wb").close()
        return path

    monkeypatch.setattr(plots, "_save", save)
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        os.makedirs(f"runs/{name}")
        report_scheme(empty_layers_model(), f"runs/{name}", acc=10.0)
    status, out, _ = run("plots", ["runs/a", "runs/b"])
    assert status == 0 and out.split() == ["runs/a/precision.png", "runs/b/precision.png"]
    status, out, _ = run("plots", ["runs/a", "runs/b/", "--out", "pngs"])
    assert status == 0 and out.split() == ["pngs/a/precision.png", "pngs/b/precision.png"]
    os.makedirs("other/a")
    shutil.copy("runs/a/scheme.json", "other/a")
    line = refused("plots", ["runs/a", "other/a", "--out", "pngs2"])
    assert "same name" in line and not os.path.exists("pngs2")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_exported_files_are_ignored_by_git_like_checkpoints():
    names = ["model.onnx", "runs/x/model.onnx", "model.bsq", "checkpoints/cifar10/x/model.pth.tar"]
    proc = subprocess.run(["git", "check-ignore", "--no-index", *names], cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode == 128:
        pytest.skip("not a git checkout")
    assert proc.stdout.split() == names


def log_of(rows):
    return {c: [row[i] for row in rows] for i, c in enumerate(COLUMNS)}


def test_one_epoch_curves_show_their_values_on_a_readable_axis():
    pytest.importorskip("matplotlib")
    from utils.report.plots import curves_figure
    fig = curves_figure(log_of([(1, 0.1, 2.3, 11.0, 52.5, 2.2, 36.86, 4.0, 8.0, 120.0)]),
                        requant_epochs=[0, 1])
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 4
    for ax, value in zip(axes, ("36.86", "52.5", "4", "8")):
        assert ax.get_xlim() == (0.0, 2.0) and [t.get_text() for t in ax.texts] == [value]
        assert [tick for tick in ax.get_xticks() if 0 <= tick <= 2] == [0, 1, 2]
    assert "1 epoch" in fig._suptitle.get_text()


def test_a_float_runs_curves_leave_out_what_does_not_change():
    pytest.importorskip("matplotlib")
    from utils.report.plots import curves_figure
    rows = [(e, 0.1, 2.0 / e, 10.0 * e, 0.0, 2.1 / e, 9.0 * e, 1.0, 32.0, 1.0) for e in (1, 2, 3)]
    fig = curves_figure(log_of(rows))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_ylabel() for ax in axes] == ["test accuracy (%)", "loss (train, test)"]
    assert len(axes[1].lines) == 2
    assert "constant over the run: regularizer B/TP 0, compression 1, average bits 32" in \
        fig._suptitle.get_text()
