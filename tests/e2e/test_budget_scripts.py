"""cifar_prune_STE.py to a budget on generated data: each target is met from the last
re-quantization during training on, its alpha trajectory is in the JSON line, log.txt and the
checkpoint; --allowed-bits gives only those precisions and an ONNX graph that agrees with the
checkpoint; bad budgets are one line before any work."""
import json
import os

import onnx
import pytest

from utils.store.checkpoint import load_checkpoint
from utils.store.epochlog import read_log

from helpers import last_json, run_script

COMMON = ["-a", "resnet", "--depth", 8, "--epochs", 3, "--Prun_Int", 1, "--Nbits", 8, "--bin",
          "--L1", "--train-batch", 8, "--manualSeed", 0, "--no-tensorboard"]  # 25 steps an epoch
ENV = {"OMP_NUM_THREADS": "1"}


def bsq(tmp_path, root, name, *flags, expect=0):
    return run_script(tmp_path, "cifar_prune_STE.py", [*COMMON, "--data-root", root,
                                                       "--checkpoint", tmp_path / name, *flags],
                      expect=expect, env=ENV)


@pytest.mark.parametrize("flag, value, key, limit", [
    ("--target-compression", 10, "comp", lambda fig: fig["comp"] >= 10),
    ("--target-bits", 2.5, "avg_bits", lambda fig: fig["avg_bits"] <= 2.5),
    ("--target-bops", 0.3, "bops", lambda fig: fig["bops"] <= 0.3e9)])
def test_each_target_ends_met_with_its_alpha_trajectory(tmp_path, cifar10_root, flag, value, key,
                                                        limit):
    proc = bsq(tmp_path, cifar10_root, "run", flag, value)
    fig = last_json(proc)
    assert limit(fig), (key, fig[key])
    assert fig["target"] == f"{flag} {value:g}" and fig["dropped_planes"] >= 0
    assert len(fig["alphas"]) == 4  # updates at steps 0, 20, 40 and 60
    assert fig["alpha"] == pytest.approx(fig["alphas"][-1], abs=1e-4)
    log = read_log(str(tmp_path / "run" / "log.txt"))
    assert len(log["alpha"]) == 3 and log["alpha"][-1] == pytest.approx(fig["alphas"][-1], rel=1e-4)
    # met at the last re-quantization during training (before epoch 3): epoch 3 trains within it
    assert f"planes dropped to meet {flag} {value:g}" in proc.stdout
    assert 0 < fig["dropped_in_training"] <= fig["dropped_planes"]
    if key != "bops":  # log.txt has no BOPs column
        assert limit({key: log[key][-1]})
    with open(tmp_path / "run" / "controller.json") as f:
        control = json.load(f)
    updates = control["updates"]
    assert [u["alpha"] for u in updates] == pytest.approx(fig["alphas"], abs=1e-6)
    assert [u["step"] for u in updates] == [0, 20, 40, 60]
    assert all(0 < u["size"] <= control["start"] for u in updates)  # planes never come back
    ckpt = load_checkpoint(str(tmp_path / "run" / "checkpoint.pth.tar"))
    assert ckpt["target"]["alpha"] == pytest.approx(fig["alphas"][-1], rel=1e-4)
    assert f"{flag} {value:g}" in proc.stdout


def test_allowed_bits_give_only_those_precisions_and_an_onnx_graph_that_agrees(tmp_path,
                                                                                cifar10_root):
    fig = last_json(bsq(tmp_path, cifar10_root, "run", "--target-bits", 6, "--allowed-bits", 4, 8))
    assert {n for weight_bias in fig["scheme"].values() for n in weight_bias} <= {0, 4, 8}
    assert 4 in {w for w, _ in fig["scheme"].values()}
    path = tmp_path / "model.onnx"
    onnx_fig = last_json(run_script(tmp_path, "export.py", [
        "--depth", 8, "--model", tmp_path / "run" / "checkpoint.pth.tar", "--onnx", path,
        "--evaluate", "--data-root", cifar10_root], env=ENV))
    graph = onnx.load(str(path)).graph
    types = {init.data_type for init in graph.initializer
             if init.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64)}
    # sign and magnitude: a 4-bit code needs 5 bits (INT8), an 8-bit one 9 (INT16)
    assert types == {onnx.TensorProto.INT8, onnx.TensorProto.INT16}
    # ONNX Runtime computes the same function up to fp32 rounding, which can flip a near tie
    assert onnx_fig["agree"] >= 95 and abs(onnx_fig["acc"] - onnx_fig["checkpoint_acc"]) <= \
        100 - onnx_fig["agree"]


@pytest.mark.parametrize("flags, message", [
    (["--target-bits", 3, "--decay", 0.1], "--target-bits 3 sets alpha itself: drop --decay"),
    (["--target-compression", 2], "--target-compression 2 is not below the starting model's "
                                  "size (8.000 bits"),
    (["--target-bits", 3, "--target-bops", 1], "give one"),
    (["--allowed-bits", 2, 4], "cannot hold the model's 8-bit layers: add 8")])
def test_bad_budgets_are_one_line_before_any_work(tmp_path, cifar10_root, flags, message):
    proc = bsq(tmp_path, cifar10_root, "run", *flags, expect=2)
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "run" / "log.txt")
