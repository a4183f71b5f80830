"""ImageNet end to end on a generated ImageFolder: torchvision's ResNet-18 from its weight file
through conversion, BSQ with re-quantization, finetuning, evaluation (top-1 and top-5), the
packed file and ONNX; torchrun with two CPU processes."""
import os
import subprocess
import sys

import pytest
import torch
import torchvision

from utils.store.checkpoint import load_checkpoint

from helpers import REPO, last_json
from helpers import run_script as run

CROPS = "--train-crop-size 32 --val-resize-size 36 --val-crop-size 32"
TINY = f"-a {os.path.join(REPO, 'tests', 'nets.py')}:tiny"


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory, imagenet_root):
    """torchvision's ResNet-18 (random weights, saved as torchvision saves them) converted to 2
    bits (the fewest planes that can drop one: a step's cost is its planes'), then one BSQ epoch
    at an alpha that empties planes, which the final re-quantization drops, then one finetuning
    epoch."""
    cwd = tmp_path_factory.mktemp("resnet18")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=6).state_dict(), cwd / "resnet18.pth")
    data = f"-a resnet18 -d imagenet --data-root {imagenet_root} {CROPS} -j 0"
    train = f"{data} --train-batch 48 --manualSeed 0 --progress 0"
    converted = last_json(run(cwd, "convert.py", f"{data} --model resnet18.pth --Nbits 2 "
                                                 "--checkpoint start"))
    bsq = run(cwd, "cifar_prune_STE.py", f"{train} --epochs 1 --Prun_Int 1 --decay 3000 --L1 "
                                         "--bin --lr 0.1 --model start/model_best.pth.tar "
                                         "--checkpoint bsq")
    ft = last_json(run(cwd, "cifar_finetune.py", f"{train} --epochs 1 --lr 0.01 --bin --model "
                                                 "bsq/checkpoint.pth.tar --checkpoint ft"))
    return cwd, data, converted, bsq, ft


def test_torchvisions_weight_file_converts_and_bsq_drops_planes(resnet18):
    cwd, _, converted, bsq, _ = resnet18
    assert converted["comp"] == 16.0 and converted["float_acc"] is not None
    start = load_checkpoint(cwd / "start" / "model_best.pth.tar")
    assert start["arch"]["arch"] == "torchvision.resnet18" and start["arch"]["form"] == "bits"
    assert start["args"]["train_crop_size"] == 32
    assert not any("downsample.0.pweight" in k for k in start["state_dict"])  # float shortcuts
    result = last_json(bsq)
    assert "re-quantized before epoch 1: 2.000 bits per weight" in bsq.stdout
    assert result["avg_bits"] < 2 and result["acc5"] >= result["acc"]
    assert (cwd / "bsq" / "scheme.json").exists()
    assert len(list((cwd / "bsq").glob("events.out.tfevents.*"))) == 1


def test_finetune_evaluate_and_exports(resnet18):
    cwd, data, _, bsq, ft = resnet18
    assert ft["scheme"] == last_json(bsq)["scheme"]
    for name, form in (("best_bin", "bits"), ("best_float", "float")):
        assert load_checkpoint(cwd / "ft" / f"{name}.pth.tar")["arch"]["form"] == form
    evaluated = run(cwd, "cifar_finetune.py", f"{data} --bin --evaluate "
                                              "--model ft/best_bin.pth.tar")
    figures = last_json(evaluated)
    assert figures["acc"] == ft["acc"] and figures["acc5"] == ft["acc5"] >= figures["acc"]
    assert f"top-5 {figures['acc5']:.2f}%" in evaluated.stdout
    packed = last_json(run(cwd, "export.py", f"{data} --model ft/best_bin.pth.tar --export "
                                             "r18.bsq"))  # it rebuilds the model from the file
    assert packed["scheme"] == ft["scheme"]  # and checks every weight; its size:
    assert packed["file_bytes"] == os.path.getsize(cwd / "r18.bsq") < packed["fp32_bytes"] / 8
    onnx = last_json(run(cwd, "export.py", f"{data} --model ft/best_bin.pth.tar --onnx r18.onnx "
                                           "--evaluate"))
    assert onnx["checkpoint_acc"] == ft["acc"] and onnx["agree"] >= 90


def test_torchrun_two_ranks_on_imagenet(tmp_path, imagenet_root):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(REPO, "cifar_prune_STE.py"), *TINY.split(), "-d", "imagenet",
           "--data-root", imagenet_root, *CROPS.split(), "-j", "1", "--train-batch", "8",
           "--epochs", "2", "--Prun_Int", "1", "--decay", "20", "--L1", "--manualSeed", "0",
           "--progress", "0", "--checkpoint", "ddp"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    checks = [line for line in proc.stdout.splitlines() if "2 ranks hold bit-identical" in line]
    assert len(checks) == 2 + 1  # after each re-quantization and at the end
    assert last_json(proc)["acc5"] >= last_json(proc)["acc"]


def test_a_bops_budget_is_met_on_torchvisions_network(resnet18):
    """BSQ of the 2-bit ResNet-18 to 90% of its bit-operations: one epoch, the controller's
    alpha, then the planes the budget still needs dropped."""
    cwd, data, converted, _, _ = resnet18
    target = 0.9 * converted["bops"] / 1e9
    result = last_json(run(cwd, "cifar_prune_STE.py", (
        f"{data} --train-batch 48 --manualSeed 0 --progress 0 --epochs 1 --Prun_Int 1 --L1 --bin "
        f"--lr 0.1 --model start/model_best.pth.tar --checkpoint target --target-bops {target}")))
    assert result["bops"] <= target * 1e9 < converted["bops"]
    assert result["target"] == f"--target-bops {target:g}"
