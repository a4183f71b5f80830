"""Every script on networks other than the release's ResNet: a researcher's own network
(``-a tests/nets.py:tiny``) through the whole recipe, exports and a killed-and-resumed BSQ run,
and a registry entry through BSQ and finetuning."""
import json
import os
import signal

import pytest
import torch

from utils.store.checkpoint import load_checkpoint

from helpers import REPO, last_json
from helpers import run_script as run

TINY = f"-a {os.path.join(REPO, 'tests', 'nets.py')}:tiny"


def same_files(a, b):
    a, b = load_checkpoint(a), load_checkpoint(b)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())
    assert (a.get("Nbit_dict"), a["epoch"], a["acc"]) == (b.get("Nbit_dict"), b["epoch"], b["acc"])


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, cifar10_root):
    """The tiny network through pretraining, 8-bit conversion and BSQ."""
    cwd = tmp_path_factory.mktemp("networks")
    common = f"{TINY} --data-root {cifar10_root} --manualSeed 4 --train-batch 50 --progress 0"
    run(cwd, "cifar_train.py", f"{common} --epochs 1 --checkpoint float")
    run(cwd, "convert.py", f"{TINY} --data-root {cifar10_root} --Nbits 8 "
                           "--model float/model_best.pth.tar --checkpoint start")
    bsq = f"{common} --epochs 3 --Prun_Int 1 --decay 5 --L1 --bin --model start/model_best.pth.tar"
    result = last_json(run(cwd, "cifar_prune_STE.py", f"{bsq} --checkpoint bsq"))
    return cwd, common, bsq, result


def test_bsq_on_a_researchers_network_requantizes_and_records_it(recipe):
    cwd, _, _, result = recipe
    assert result["avg_bits"] < 8  # planes were dropped at this alpha
    ckpt = load_checkpoint(cwd / "bsq" / "checkpoint.pth.tar")
    assert ckpt["arch"]["arch"].endswith("nets.py:tiny") and ckpt["arch"]["form"] == "bits"
    scheme = json.loads((cwd / "bsq" / "scheme.json").read_text())
    assert [row["name"] for row in scheme["layers"]] == ["stem", "depthwise", "pointwise",
                                                         "pointwise", "head", "head"]
    assert set(result["scheme"]) == {"stem", "depthwise", "pointwise", "head"}


def test_a_killed_bsq_run_resumes_bit_identical(recipe):
    cwd, _, bsq, _ = recipe
    run(cwd, "cifar_prune_STE.py", f"{bsq} --checkpoint killed",
        faults=("--kill-epoch", "2", "--kill-step", "2"), expect=-signal.SIGKILL)
    run(cwd, "cifar_prune_STE.py", f"{bsq} --checkpoint killed --resume "
                                   "killed/checkpoint.pth.tar")
    for name in ("checkpoint.pth.tar", "model_best.pth.tar"):
        same_files(cwd / "bsq" / name, cwd / "killed" / name)


@pytest.fixture(scope="module")
def finetuned(recipe):
    """The BSQ result of ``recipe`` finetuned for one epoch into ``ft``: its final JSON line."""
    cwd, common, _, _ = recipe
    return last_json(run(cwd, "cifar_finetune.py", f"{common} --epochs 1 --lr 0.01 --Nbits 8 "
                                                   "--bin --model bsq/checkpoint.pth.tar "
                                                   "--checkpoint ft"))


def test_finetune_evaluate_convert_and_export(recipe, finetuned, cifar10_root):
    cwd, common, _, bsq = recipe
    data = f"--data-root {cifar10_root}"
    ft = finetuned
    assert ft["scheme"] == bsq["scheme"]
    for name, form in (("best_bin", "bits"), ("best_float", "float")):
        assert load_checkpoint(cwd / "ft" / f"{name}.pth.tar")["arch"]["form"] == form
    ev = last_json(run(cwd, "cifar_finetune.py", f"{TINY} {data} --Nbits 8 --bin --evaluate "
                                                 "--model ft/best_bin.pth.tar"))
    assert ev["acc"] == ft["acc"]
    scratch = last_json(run(cwd, "convert.py", f"{TINY} {data} --model float/model_best.pth.tar "
                                               "--dict bsq/checkpoint.pth.tar --checkpoint mp"))
    assert scratch["scheme"] == bsq["scheme"]
    packed = last_json(run(cwd, "export.py", f"{TINY} {data} --model ft/best_bin.pth.tar "
                                             "--export tiny.bsq --evaluate"))
    assert packed["acc"] == packed["checkpoint_acc"] == ft["acc"]
    loaded = last_json(run(cwd, "export.py", f"--load tiny.bsq {data} --evaluate"))
    assert loaded["acc"] == ft["acc"]
    onnx = last_json(run(cwd, "export.py", f"{TINY} {data} --model ft/best_bin.pth.tar "
                                           "--onnx tiny.onnx --evaluate"))
    assert onnx["agree"] > 90 and onnx["checkpoint_acc"] == ft["acc"]


def test_bsq_continues_from_a_finetune_checkpoint(recipe, finetuned):
    cwd, common, _, _ = recipe
    out = run(cwd, "cifar_prune_STE.py", f"{common} --epochs 1 --Prun_Int 0 --L1 --bin "
                                         "--model ft/checkpoint.pth.tar --checkpoint again")
    assert "is in finetune form: BSQ continues from its bit representation" in out.stdout


def test_a_registry_network_through_bsq_and_finetuning(tmp_path, cifar10_root):
    arch = "-a densenet --depth 10 --growthRate 4 --drop 0.2 --act 2"
    common = f"{arch} --data-root {cifar10_root} --manualSeed 1 --train-batch 50 --progress 0"
    bsq = last_json(run(tmp_path, "cifar_prune_STE.py", f"{common} --epochs 2 --Prun_Int 1 "
                                                        "--decay 5 --L1 --Nbits 6 --checkpoint b"))
    assert bsq["avg_bits"] < 6
    ckpt = load_checkpoint(tmp_path / "b" / "checkpoint.pth.tar")
    assert ckpt["arch"] == {"arch": "densenet", "depth": 10, "growthRate": 4, "compressionRate": 2,
                            "drop": 0.2, "num_classes": 10, "act": 2, "form": "bits"}
    assert any(k.endswith(".alpha") for k in ckpt["state_dict"])  # PACT at each call site
    out = run(tmp_path, "cifar_finetune.py", f"{common} --depth 16 --epochs 1 --Nbits 6 --bin "
                                             "--model b/checkpoint.pth.tar --checkpoint f",
              expect=2)
    assert "is a DenseNet-BC-10 (k=4), this run builds DenseNet-BC-16 (k=4): pass --depth 10" \
        in out.stderr
    ft = last_json(run(tmp_path, "cifar_finetune.py", f"{common} --epochs 1 --Nbits 6 --bin "
                                                      "--model b/checkpoint.pth.tar "
                                                      "--checkpoint f"))
    assert ft["scheme"] == bsq["scheme"]


@pytest.mark.parametrize("arch", [f"{os.path.join(REPO, 'tests', 'nets.py')}:zoo",
                                  "torchvision.mobilenet_v3_small"])
def test_networks_of_common_calls_through_bsq_finetuning_and_onnx(arch, tmp_path, cifar10_root):
    """``tests/nets.py:zoo`` (F.hardswish stem, a torch.sigmoid gate, F.silu, means,
    interpolation, LayerNorm, GELU, dropout) and torchvision's MobileNetV3-small: float
    training, conversion, BSQ, finetuning, then ONNX Runtime's accuracy within 0.5 points of
    the checkpoint's."""
    zoo = f"-a {arch} --data-root {cifar10_root}"
    common = f"{zoo} --manualSeed 2 --train-batch 50 --progress 0"
    run(tmp_path, "cifar_train.py", f"{common} --epochs 1 --checkpoint float")
    run(tmp_path, "convert.py", f"{zoo} --Nbits 6 --model float/model_best.pth.tar "
                                "--checkpoint start")
    run(tmp_path, "cifar_prune_STE.py", f"{common} --epochs 1 --Prun_Int 1 --decay 1 --L1 "
                                        "--Nbits 6 --bin --model start/model_best.pth.tar "
                                        "--checkpoint b")
    run(tmp_path, "cifar_finetune.py", f"{common} --epochs 1 --lr 0.01 --Nbits 6 --bin "
                                       "--model b/checkpoint.pth.tar --checkpoint f")
    onnx = last_json(run(tmp_path, "export.py", f"{zoo} --model f/best_bin.pth.tar --onnx z.onnx "
                                                "--evaluate"))
    assert abs(onnx["acc"] - onnx["checkpoint_acc"]) <= 0.5 and onnx["agree"] > 90
