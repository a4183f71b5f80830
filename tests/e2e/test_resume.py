"""A run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run (CPU), and
shows each epoch once in TensorBoard."""
import json
import os
import signal

import pytest
import torch

from utils.store.checkpoint import load_checkpoint

from helpers import assert_board_is_the_log, board_hparams, board_scalars
from helpers import run_script as run


def assert_same_model(a, b):
    a, b = load_checkpoint(a), load_checkpoint(b)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert a.get("Nbit_dict") == b.get("Nbit_dict")
    assert (a["epoch"], a["acc"], a["best_acc"]) == (b["epoch"], b["acc"], b["best_acc"])


def log_epochs(folder):
    with open(os.path.join(folder, "log.txt")) as f:
        return [int(r.split("\t")[0]) for r in f.read().splitlines()[1:] if not r.startswith("#")]


@pytest.fixture(scope="module")
def start(tmp_path_factory, cifar10_root):
    """An 8-bit ResNet-8 to start BSQ from, and the flags every run shares."""
    cwd = tmp_path_factory.mktemp("resume")
    data = f"--depth 8 --data-root {cifar10_root}"
    common = f"{data} --manualSeed 3 --deterministic --train-batch 64"
    run(cwd, "cifar_train.py", f"{common} --epochs 1 --checkpoint float")
    run(cwd, "convert.py", f"{data} --Nbits 8 --model float/model_best.pth.tar --checkpoint start")
    return cwd, common


BSQ = "--epochs 4 --Prun_Int 2 --decay 3 --L1 --bin --model start/model_best.pth.tar"


@pytest.fixture(scope="module")
def uninterrupted(start):
    cwd, common = start
    run(cwd, "cifar_prune_STE.py", f"{common} {BSQ} --checkpoint straight")
    return cwd, common


@pytest.mark.parametrize("name,faults", [
    ("mid_interval", ("--kill-epoch", "2", "--kill-step", "2")),  # in the first Prun_Int interval
    ("late_interval", ("--kill-epoch", "4", "--kill-step", "1")),  # after the re-quantization at 2
    ("during_save", ("--kill-save", "5")),  # tearing a checkpoint write in epoch 2 or 3
    ("after_its_row", ("--kill-checkpoint", "2")),  # epoch 2 logged, its checkpoint torn
])
def test_bsq_resume_after_sigkill_is_bit_identical(uninterrupted, name, faults):
    """The model, and the TensorBoard events: each epoch once, the uninterrupted run's."""
    cwd, common = uninterrupted
    folder = f"killed_{name}"
    run(cwd, "cifar_prune_STE.py", f"{common} {BSQ} --checkpoint {folder}", faults=faults,
        expect=-signal.SIGKILL)
    survivor = load_checkpoint(os.path.join(cwd, folder, "checkpoint.pth.tar"))  # still loadable
    assert survivor["epoch"] < 4
    logged = [step for step, _ in assert_board_is_the_log(cwd / folder)["test/acc"]]
    if name == "after_its_row":  # an epoch logged but not saved: the resume must drop it
        assert logged[-1] > survivor["epoch"]
    run(cwd, "cifar_prune_STE.py",
        f"{common} {BSQ} --checkpoint {folder} --resume {folder}/checkpoint.pth.tar")
    assert_same_model(os.path.join(cwd, "straight", "checkpoint.pth.tar"),
                      os.path.join(cwd, folder, "checkpoint.pth.tar"))
    assert_same_model(os.path.join(cwd, "straight", "model_best.pth.tar"),
                      os.path.join(cwd, folder, "model_best.pth.tar"))
    assert log_epochs(os.path.join(cwd, folder)) == [1, 2, 3, 4]
    resumed, straight = assert_board_is_the_log(cwd / folder), board_scalars(cwd / "straight")
    assert resumed.keys() == straight.keys()
    for tag in set(resumed) - {"time/epoch_seconds"}:
        assert resumed[tag] == straight[tag], tag


def test_the_events_hold_each_re_quantization_and_the_final_figures(uninterrupted):
    cwd, _ = uninterrupted
    scalars = board_scalars(cwd / "straight")
    assert len(list((cwd / "straight").glob("events.out.tfevents.*"))) == 1
    final = json.loads((cwd / "straight" / "scheme.json").read_text())
    for layer, (weight, bias) in final["scheme"].items():  # before epochs 1 and 3, and the end
        assert [step for step, _ in scalars[f"precision/{layer}"]] == [1, 3, 5]
        assert scalars[f"precision/{layer}"][-1][1] == weight
        assert scalars[f"precision_bias/{layer}"][-1][1] == bias
    assert scalars["precision/conv1"][0] == (1, 8)
    best = load_checkpoint(cwd / "straight" / "checkpoint.pth.tar")["best_acc"]
    for tag, value in [("final/acc", final["totals"]["acc"]), ("final/best_acc", best),
                       ("final/comp", round(final["totals"]["compression"], 4)),  # as the
                       ("final/avg_bits", round(final["totals"]["avg_bits"], 4))]:  # JSON line
        assert scalars[tag] == [(5, pytest.approx(value, rel=1e-6))], tag
    hparams, metrics = board_hparams(cwd / "straight")
    assert hparams["decay"] == 3 and hparams["Prun_Int"] == 2 and hparams["L1"] == 1  # True
    assert sorted(metrics) == ["final/acc", "final/avg_bits", "final/best_acc", "final/comp"]


FT = "--epochs 3 --lr 0.01 --schedule 2 --bin --model straight/checkpoint.pth.tar"


@pytest.mark.parametrize("faults", [("--kill-epoch", "2", "--kill-step", "1"),
                                    ("--kill-save", "3")])
def test_finetune_resume_after_sigkill_is_bit_identical(uninterrupted, faults):
    cwd, common = uninterrupted
    folder = f"ft_killed_{faults[0].strip('-')}"
    if not os.path.exists(os.path.join(cwd, "ft_straight")):
        run(cwd, "cifar_finetune.py", f"{common} {FT} --checkpoint ft_straight")
    run(cwd, "cifar_finetune.py", f"{common} {FT} --checkpoint {folder}", faults=faults,
        expect=-signal.SIGKILL)
    run(cwd, "cifar_finetune.py",
        f"{common} {FT} --checkpoint {folder} --resume {folder}/checkpoint.pth.tar")
    for name in ("best_bin.pth.tar", "best_float.pth.tar", "checkpoint.pth.tar"):
        assert_same_model(os.path.join(cwd, "ft_straight", name), os.path.join(cwd, folder, name))
    assert log_epochs(os.path.join(cwd, folder)) == [1, 2, 3]


def test_the_release_loader_resumes_bit_identically(start):
    """--loader release draws from the global generator, whose state the checkpoint keeps."""
    cwd, common = start
    flags = f"{common} {BSQ} --epochs 3 --loader release -j 0"
    run(cwd, "cifar_prune_STE.py", f"{flags} --checkpoint release_straight")
    run(cwd, "cifar_prune_STE.py", f"{flags} --checkpoint release_killed",
        faults=("--kill-epoch", "2", "--kill-step", "2"), expect=-signal.SIGKILL)
    run(cwd, "cifar_prune_STE.py", f"{flags} --checkpoint release_killed "
                                   "--resume release_killed/checkpoint.pth.tar")
    for name in ("checkpoint.pth.tar", "model_best.pth.tar"):
        assert_same_model(os.path.join(cwd, "release_straight", name),
                          os.path.join(cwd, "release_killed", name))


def test_a_resume_keeps_corrected_and_may_change_lr_and_decay(start):
    """After a non-finite loss the advice is a lower --lr or --decay: --resume takes them, says
    so, records them in the checkpoint and notes them in log.txt; --corrected is the run's."""
    cwd, common = start
    flags = f"{common} --Prun_Int 2 --decay 3 --L1 --bin --model start/model_best.pth.tar"
    run(cwd, "cifar_prune_STE.py", f"{flags} --corrected --epochs 2 --checkpoint changed")
    proc = run(cwd, "cifar_prune_STE.py", f"{flags} --epochs 3 --lr 0.05 --decay 1 --checkpoint "
                                          "changed --resume changed/checkpoint.pth.tar")
    assert "resuming after epoch 2 with --lr 0.05 (was 0.1), --decay 1.0 (was 3.0)" in proc.stdout
    recorded = load_checkpoint(os.path.join(cwd, "changed", "checkpoint.pth.tar"))["args"]
    assert (recorded["lr"], recorded["decay"], recorded["corrected"]) == (0.05, 1.0, True)
    with open(os.path.join(cwd, "changed", "log.txt")) as f:
        lines = f.read().splitlines()
    assert lines[3] == "# after epoch 2: resumed with --lr 0.05 (was 0.1), --decay 1.0 (was 3.0)"
    assert [line.split("\t")[:2] for line in lines[1:3] + lines[4:]] == [
        ["1", "0.1"], ["2", "0.1"], ["3", "0.05"]]


def test_deterministic_reruns_are_bit_identical(uninterrupted):
    cwd, common = uninterrupted
    run(cwd, "cifar_prune_STE.py", f"{common} {BSQ} --epochs 2 --checkpoint again_a")
    run(cwd, "cifar_prune_STE.py", f"{common} {BSQ} --epochs 2 --checkpoint again_b")
    assert_same_model(os.path.join(cwd, "again_a", "checkpoint.pth.tar"),
                      os.path.join(cwd, "again_b", "checkpoint.pth.tar"))
