"""export.py: bad flags, reading a packed file back, and an export that evaluates to the
checkpoint's own accuracy."""
import os
import re

import pytest
from helpers import last_json, mixed_model, run_script

import export
from models.packed import pack
from utils.checkpoint import checkpoint_state, save_checkpoint
from utils.errors import BSQError


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
