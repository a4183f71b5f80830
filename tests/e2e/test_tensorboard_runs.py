"""TensorBoard event files of real runs, read back: the scalars are log.txt's rows, each
re-quantization's precisions and the final figures are there, and a run killed after logging an
epoch it had not saved, then resumed, shows every epoch once with the uninterrupted run's values."""
import glob
import json
import math
import os
import signal

import pytest
from helpers import board_hparams, board_scalars, last_json, run_script

from utils.board import TAGS
from utils.epochlog import read_log

BSQ = ("--depth 8 --epochs 3 --Prun_Int 2 --decay 20 --L1 --train-batch 32 --manualSeed 2 "
       "--deterministic --progress 0")


@pytest.fixture(scope="module")
def straight(tmp_path_factory, cifar10_root):
    cwd = tmp_path_factory.mktemp("board")
    proc = run_script(cwd, "cifar_prune_STE.py", f"{BSQ} --data-root {cifar10_root} "
                      "--checkpoint straight")
    return cwd, last_json(proc)


def assert_scalars_are_the_log(folder):
    scalars, log = board_scalars(folder), read_log(os.path.join(folder, "log.txt"))
    for column, tag in TAGS.items():
        assert [step for step, _ in scalars[tag]] == log["epoch"], tag
        for (_, value), logged in zip(scalars[tag], log[column]):
            assert math.isclose(value, logged, rel_tol=1e-5, abs_tol=1e-7), (tag, value, logged)
    return scalars


def test_scalars_are_the_log_rows_and_precisions_each_re_quantization(straight):
    cwd, figures = straight
    scalars = assert_scalars_are_the_log(cwd / "straight")
    assert len(glob.glob(str(cwd / "straight" / "events.out.tfevents.*"))) == 1
    # re-quantized before epochs 1 and 3, then the final model after epoch 3 (step 4)
    for layer, (weight, bias) in figures["scheme"].items():
        assert [step for step, _ in scalars[f"precision/{layer}"]] == [1, 3, 4]
        assert scalars[f"precision/{layer}"][-1][1] == weight
        assert scalars[f"precision_bias/{layer}"][-1][1] == bias
    assert scalars["precision/conv1"][0] == (1, 8)
    for name in ("acc", "best_acc", "comp", "avg_bits"):
        assert math.isclose(scalars[f"final/{name}"][0][1], figures[name], rel_tol=1e-6)
    hparams, metrics = board_hparams(cwd / "straight")
    assert hparams["decay"] == 20 and hparams["Prun_Int"] == 2 and hparams["L1"] == 1  # True
    assert "final/acc" in metrics


def test_a_resumed_run_shows_each_epoch_once(straight, cifar10_root):
    """Killed while saving epoch 2's checkpoint, after logging epoch 2: the resumed run redoes
    epoch 2, and TensorBoard shows epochs 1, 2, 3 once each, with the uninterrupted run's
    figures (bit-identical runs on the CPU; only the epoch times differ)."""
    cwd, figures = straight
    common = f"{BSQ} --data-root {cifar10_root} --checkpoint killed"
    run_script(cwd, "cifar_prune_STE.py", common, faults=("--kill-checkpoint", "2"),
               expect=-signal.SIGKILL)
    assert [s for s, _ in board_scalars(cwd / "killed")["test/acc"]] == [1, 2]  # 2 not saved
    proc = run_script(cwd, "cifar_prune_STE.py", f"{common} --resume killed/checkpoint.pth.tar")
    assert last_json(proc)["acc"] == figures["acc"]
    assert len(glob.glob(str(cwd / "killed" / "events.out.tfevents.*"))) == 2
    resumed = assert_scalars_are_the_log(cwd / "killed")
    reference = board_scalars(cwd / "straight")
    assert resumed.keys() == reference.keys()
    for tag in resumed:
        if tag != "time/epoch_seconds":
            assert resumed[tag] == reference[tag], tag
    assert json.loads((cwd / "killed" / "scheme.json").read_text())["scheme"] == figures["scheme"]
