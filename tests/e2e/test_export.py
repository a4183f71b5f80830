"""export.py: bad flags, reading a packed file back, and an export that evaluates to the
checkpoint's own accuracy."""
import os
import re

import onnx
import pytest

import export
from models.packed import pack
from utils.errors import BSQError
from utils.store.checkpoint import checkpoint_state, save_checkpoint

from helpers import last_json, mixed_model, run_script


def test_export_script_bad_flags_are_one_line_errors(tmp_path):
    parser = export.get_args_parser()
    with pytest.raises(BSQError, match="--export needs --model"):
        export.main(parser.parse_args(["--export", str(tmp_path / "m.bsq")]))
    with pytest.raises(BSQError, match="either"):
        export.main(parser.parse_args([]))
    float_ckpt = str(tmp_path / "float.pth.tar")
    save_checkpoint(checkpoint_state(mixed_model().to_float_()), float_ckpt)
    with pytest.raises(BSQError, match="float model"):
        export.main(parser.parse_args(["--depth", "8", "--model", float_ckpt, "--export",
                                       str(tmp_path / "m.bsq")]))


def test_export_script_loads_a_packed_file(tmp_path, capsys):
    model = mixed_model()
    path = str(tmp_path / "model.bsq")
    pack(model, path)
    fig = export.main(export.get_args_parser().parse_args(["--load", path]))
    assert fig["file_bytes"] == os.path.getsize(path) and fig["scheme"] == model.scheme()
    assert fig["comp"] == round(model.compression(), 4) and fig["acc"] is None
    assert re.search(rf"\n  file +{fig['file_bytes']} bytes\n", capsys.readouterr().out)


def test_export_script_evaluates_to_the_checkpoints_accuracy(tmp_path, cifar10_root):
    ckpt = str(tmp_path / "bsq.pth.tar")
    save_checkpoint(checkpoint_state(mixed_model(continuous=True), acc=12.0), ckpt)
    packed = str(tmp_path / "out" / "model.bsq")
    proc = run_script(tmp_path, "export.py", ["--depth", 8, "--model", ckpt, "--export", packed,
                                              "--evaluate", "--data-root", cifar10_root],
                      env={"OMP_NUM_THREADS": "1"})  # a tiny model on a shared CPU
    fig = last_json(proc)
    assert fig["acc"] == fig["checkpoint_acc"] is not None
    assert fig["file_bytes"] == os.path.getsize(packed)
    assert fig["fp32_ratio"] == round(fig["fp32_bytes"] / fig["file_bytes"], 4)
    assert f"{fig['file_bytes']} bytes" in proc.stdout


def test_onnx_export_evaluates_against_the_checkpoint(tmp_path, cifar10_root):
    ckpt = str(tmp_path / "bsq.pth.tar")
    save_checkpoint(checkpoint_state(mixed_model(act=2, continuous=True), acc=12.0), ckpt)
    common = ["--depth", 8, "--act", 2, "--model", ckpt, "--evaluate", "--data-root", cifar10_root]
    env = {"OMP_NUM_THREADS": "1"}
    path = tmp_path / "out" / "model.onnx"
    fig = last_json(run_script(tmp_path, "export.py", [*common, "--onnx", path], env=env))
    packed = last_json(run_script(tmp_path, "export.py",
                                  [*common, "--export", tmp_path / "m.bsq"], env=env))
    onnx.checker.check_model(str(path), full_check=True)
    assert fig["file_bytes"] == os.path.getsize(path) < fig["float_weights_bytes"]
    assert fig["checkpoint_acc"] == packed["checkpoint_acc"]  # evaluate()'s accuracy
    # ONNX Runtime computes the same function up to fp32 rounding (README, ONNX): a wrong
    # graph (a weight, a quantizer, an order) moves logits by far more and flips predictions
    assert fig["max_logit_diff"] < 1e-2 and fig["agree"] > 90
    assert fig["scheme"] == packed["scheme"] and fig["onnx"] == str(path)


def test_onnx_export_refuses_a_folder_it_cannot_write(tmp_path, monkeypatch):
    ckpt = str(tmp_path / "bsq.pth.tar")
    save_checkpoint(checkpoint_state(mixed_model()), ckpt)
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a read-only folder would
    with pytest.raises(BSQError, match="is not writable"):
        export.main(export.get_args_parser().parse_args(
            ["--depth", "8", "--model", ckpt, "--onnx", str(tmp_path / "ro" / "m.onnx")]))
    assert sorted(os.listdir(tmp_path)) == ["bsq.pth.tar"]
