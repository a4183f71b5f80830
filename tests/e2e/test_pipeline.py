"""End to end: the release's command lines, run verbatim as subprocesses on generated data.

Each command is the original README's, with only run-size flags appended (argparse keeps the
last value): a 1-2 epoch budget, a tiny generated dataset, a fixed seed.
"""
import json
import os
import re

import pytest

from helpers import last_json as figures
from helpers import run_script as run


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, cifar10_root):
    """Pretrain -> convert 8 bits -> BSQ -> evaluate -> finetune -> convert --dict."""
    cwd = tmp_path_factory.mktemp("pipeline")
    data = f"--data-root {cifar10_root}"
    small = f"{data} --manualSeed 0"
    out = {"cwd": cwd, "small": small}
    out["train"] = figures(run(cwd, "cifar_train.py", "-a resnet --depth 20 --checkpoint "
                               f"checkpoints/cifar10/resnet-20 --epochs 1 {small}"))
    out["convert"] = figures(run(cwd, "convert.py", "-a resnet --depth 20 --model "
                                 "checkpoints/cifar10/resnet-20/model_best.pth.tar --checkpoint "
                                 f"checkpoints/cifar10/resnet-20-8 --Nbits 8 --act 4 {data}"))
    out["bsq"] = figures(run(cwd, "cifar_prune_STE.py", (
        "-a resnet --depth 20 --epochs 350 --lr 0.1 --schedule 250 --gamma 0.1 --wd 1e-4 --model "
        "checkpoints/cifar10/resnet-20-8/model_best.pth.tar --decay 0.01 --Prun_Int 100 --thre 0.0 "
        "--checkpoint checkpoints/cifar10/xxx --Nbits 8 --act 4 --bin --L1 "
        f"--epochs 2 --Prun_Int 1 --decay 5 --train-batch 32 {small}")))
    out["evaluate"] = figures(run(cwd, "cifar_finetune.py", (
        "-a resnet --depth 20 --model checkpoints/cifar10/xxx/checkpoint.pth.tar --Nbits 8 "
        f"--act 4 --bin --evaluate {small}")))
    out["finetune"] = figures(run(cwd, "cifar_finetune.py", (
        "-a resnet --depth 20 --epochs 300 --lr 0.01 --schedule 150 250 --gamma 0.1 --wd 1e-4 "
        "--model checkpoints/cifar10/xxx/checkpoint.pth.tar "
        "--checkpoint checkpoints/cifar10/xxx-ft "
        f"--Nbits 8 --act 4 --bin --epochs 1 {small}")))
    out["mp"] = figures(run(cwd, "convert.py", (
        "-a resnet --depth 20 --model checkpoints/cifar10/resnet-20/model_best.pth.tar --dict "
        "checkpoints/cifar10/xxx/checkpoint.pth.tar --checkpoint checkpoints/cifar10/xxx-mp "
        f"--Nbits 8 --act 4 {data}")))
    return out


def test_pretraining_writes_a_float_model(pipeline):
    ckpt = pipeline["cwd"] / "checkpoints/cifar10/resnet-20"
    assert (ckpt / "model_best.pth.tar").exists() and (ckpt / "log.txt").exists()
    assert pipeline["train"]["comp"] == 1.0 and pipeline["train"]["scheme"] is None


def test_convert_8_bits_is_4x(pipeline):
    fig = pipeline["convert"]
    assert fig["comp"] == 4.0 and fig["avg_bits"] == 8.0
    assert all(n == [8, 0] for k, n in fig["scheme"].items() if k != "fc")
    assert len(fig["scheme"]) == 20 and not any("downsample" in k for k in fig["scheme"])


def test_bsq_drops_bits(pipeline):
    fig = pipeline["bsq"]
    assert fig["comp"] > 4.0
    assert any(n[0] < 8 for n in fig["scheme"].values())
    folder = pipeline["cwd"] / "checkpoints/cifar10/xxx"
    assert {"checkpoint.pth.tar", "model_best.pth.tar", "log.txt"} <= set(os.listdir(folder))
    rows = (folder / "log.txt").read_text().strip().splitlines()
    assert rows[0].split("\t")[0] == "epoch" and len(rows) == 1 + 2
    assert all(len(r.split("\t")) == len(rows[0].split("\t")) for r in rows)


def test_evaluate_reproduces_the_bsq_accuracy(pipeline):
    assert pipeline["evaluate"]["acc"] == pipeline["bsq"]["acc"]
    assert pipeline["evaluate"]["scheme"] == pipeline["bsq"]["scheme"]
    assert pipeline["evaluate"]["comp"] == pipeline["bsq"]["comp"]


def test_finetune_writes_bin_and_float_that_agree(pipeline):
    cwd, small = pipeline["cwd"], pipeline["small"]
    folder = "checkpoints/cifar10/xxx-ft"
    assert pipeline["finetune"]["scheme"] == pipeline["bsq"]["scheme"]
    bin_eval = figures(run(cwd, "cifar_finetune.py", f"-a resnet --depth 20 --model {folder}/"
                           f"best_bin.pth.tar --Nbits 8 --act 4 --bin --evaluate {small}"))
    float_eval = figures(run(cwd, "cifar_finetune.py", f"-a resnet --depth 20 --model {folder}/"
                             f"best_float.pth.tar --Nbits 8 --act 4 --evaluate {small}"))
    assert bin_eval["acc"] == float_eval["acc"] == pipeline["finetune"]["acc"]
    assert bin_eval["scheme"] == pipeline["bsq"]["scheme"]


def test_convert_dict_reproduces_the_scheme(pipeline):
    assert pipeline["mp"]["scheme"] == pipeline["bsq"]["scheme"]
    assert pipeline["mp"]["comp"] == pipeline["bsq"]["comp"]


def test_cifar100_bsq_epoch_from_random_8_bits(tmp_path, cifar100_root):
    fig = figures(run(tmp_path, "cifar_prune_STE.py", (
        "-a resnet --depth 8 -d cifar100 --epochs 1 --decay 0.01 --Prun_Int 1 --checkpoint bsq "
        f"--Nbits 8 --act 4 --bin --L1 --data-root {cifar100_root} --manualSeed 0")))
    assert fig["scheme"]["fc"] == [8, 8] and fig["comp"] >= 4.0
    assert (tmp_path / "bsq" / "checkpoint.pth.tar").exists()


def test_no_dataset_offline_is_one_clean_line(tmp_path):
    proc = run(tmp_path, "cifar_train.py", f"--depth 8 --epochs 1 --data-root {tmp_path}/none "
               "--checkpoint out", expect=2)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cifar-10-batches-py" in lines[0]


def test_speed_flags_run_end_to_end(tmp_path, cifar10_root):
    """--amp (bf16 autocast, here on the CPU) and --channels-last through a BSQ epoch; the
    result stays a valid bit model whose evaluation reproduces the reported accuracy."""
    common = f"--depth 8 --data-root {cifar10_root} --manualSeed 0"
    fig = figures(run(tmp_path, "cifar_prune_STE.py", f"{common} --epochs 1 --Prun_Int 1 --L1 "
                      "--bin --checkpoint fast --amp --channels-last"))
    evaluated = figures(run(tmp_path, "cifar_finetune.py", f"{common} --bin --evaluate --model "
                            "fast/checkpoint.pth.tar"))
    assert evaluated["acc"] == fig["acc"] and evaluated["scheme"] == fig["scheme"]


def strict_json(line):
    """``json.loads`` that refuses NaN and Infinity, as strict parsers do."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_a_run_that_empties_every_layer_reports_null_compression(tmp_path, cifar10_root):
    """alpha 1e5 zeroes every bit plane: with --corrected (precision 0) the regularizer becomes
    0, the run ends normally, and the compression (32 TP / 0) is null in strict JSON, 'undefined'
    in the text."""
    proc = run(tmp_path, "cifar_prune_STE.py", f"--depth 8 --epochs 2 --Prun_Int 1 --decay 1e5 "
               f"--L1 --bin --data-root {cifar10_root} --checkpoint z --manualSeed 0 --corrected")
    fig = strict_json(proc.stdout.strip().splitlines()[-1])
    assert fig["comp"] is None and fig["avg_bits"] == 0.0
    assert all(n == [0, 0] for n in fig["scheme"].values())
    assert "compression undefined (no bits)" in proc.stdout
    report = strict_json((tmp_path / "z" / "scheme.json").read_text())
    assert report["totals"]["compression"] is None and report["totals"]["TB"] == 0


TIME = r"(\d+h\d\dm|\d+m\d\ds|\d+s)"  # utils.report.console.duration


def test_without_a_terminal_progress_lines_and_the_time_left_appear(tmp_path, cifar10_root):
    proc = run(tmp_path, "cifar_prune_STE.py", f"--depth 8 --epochs 2 --train-batch 20 --L1 "
               f"--bin --data-root {cifar10_root} --checkpoint p --manualSeed 0 --progress 0.001")
    progress = [line for line in proc.stderr.splitlines() if line.startswith("epoch ")]
    assert len(progress) >= 10  # 10 steps per epoch, a line after each at this interval
    assert re.fullmatch(rf"epoch 1/2 step 1/10  loss \d+\.\d{{4}} acc \d+\.\d\d%  "
                        rf"elapsed {TIME}  eta {TIME}", progress[0]), progress[0]
    epochs = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2 and all(re.search(rf"elapsed {TIME}  eta {TIME}$", e) for e in epochs)
    quiet = run(tmp_path, "cifar_prune_STE.py", f"--depth 8 --epochs 1 --L1 --bin --data-root "
                f"{cifar10_root} --checkpoint q --manualSeed 0 --progress 0")
    assert quiet.stderr == ""
