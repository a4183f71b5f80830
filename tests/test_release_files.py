"""Files laid out as the original release writes them load, evaluate, convert, finetune and
resume here, and compute exactly what the same weights in our own layout compute.

The release's layout: keys prefixed ``module.``, 0-dim ``scale``/``biasscale``, an ``Nbit_dict``
that may list the shortcut convs (older versions) and in bits form never says 0 (an all-zero
layer keeps one zero plane at precision 1), and only the fields ``epoch state_dict acc best_acc
optimizer`` (+ ``Nbit_dict``). Files of ours written before scales became 0-dim hold them as (1,).
"""
import os
import re

import pytest
import torch

from helpers import REPO, last_json, mixed_model, run_script
from models import resnet
from utils.checkpoint import CheckpointError, checkpoint_state, load_checkpoint, \
    load_model_state, save_checkpoint
from utils.data import build_loaders
from utils.engine import evaluate

SHORTCUTS = ("layer2.0.downsample.0", "layer3.0.downsample.0")
RELEASE_DIR = os.environ.get("BSQ_RELEASE_CHECKPOINTS",
                             os.path.join(REPO, "..", "shared", "reference", "release-checkpoints"))


def release_layout(model, optimizer=None, epoch=1, scale_shape=()):
    """The checkpoint dict the release would write for ``model``."""
    state = {f"module.{k}": v.reshape(scale_shape) if k.endswith("scale") else v
             for k, v in model.state_dict().items()}
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ckpt = {"epoch": epoch, "state_dict": state, "acc": 10.0, "best_acc": 10.0,
            "optimizer": optimizer.state_dict()}
    if model.form == "bits":
        ckpt["Nbit_dict"] = {k: [max(v[0], 1), v[1]] for k, v in model.scheme().items()}
    elif model.form == "finetune":
        ckpt["Nbit_dict"] = model.scheme()
    if "Nbit_dict" in ckpt:
        ckpt["Nbit_dict"].update({name: [8, 0] for name in SHORTCUTS})
    return ckpt


def model_in(form):
    model = mixed_model(form="finetune" if form == "finetune" else "bits")
    return (model.to_float_() if form == "float" else model).eval()


@pytest.fixture
def images():
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("scale_shape", [(), (1,)])
@pytest.mark.parametrize("form", ["bits", "finetune", "float"])
def test_release_layout_gives_the_logits_of_our_layout(form, scale_shape, images, tmp_path):
    model = model_in(form)
    torch.save(release_layout(model, scale_shape=scale_shape), tmp_path / "release.pth.tar")
    save_checkpoint(checkpoint_state(model), tmp_path / "ours.pth.tar")
    expected = model(images)
    for name in ("release.pth.tar", "ours.pth.tar"):
        loaded = load_model_state(resnet(depth=8), load_checkpoint(tmp_path / name)).eval()
        assert loaded.form == form
        assert torch.equal(loaded(images), expected), name


def test_our_files_store_0_dim_scales_like_the_release(tmp_path):
    save_checkpoint(checkpoint_state(model_in("bits")), tmp_path / "ours.pth.tar")
    state = load_checkpoint(tmp_path / "ours.pth.tar")["state_dict"]
    assert state["conv1.scale"].shape == () and state["fc.biasscale"].shape == ()


def test_parameters_are_in_the_release_order():
    """The release's modules register conv1, bn1, conv2, bn2, then the activations (PACT's
    alphas), then the shortcut; a bit layer holds pweight, nweight, scale (then the bias's)."""
    def layer(name, bias=False):
        return [f"{name}.{k}" for k in ("pweight", "nweight", "scale")] + \
            ([f"{name}.{k}" for k in ("pbias", "nbias", "biasscale")] if bias else [])

    def bn(name):
        return [f"{name}.weight", f"{name}.bias"]

    expected = layer("conv1") + bn("bn1")
    for stage in ("layer1", "layer2", "layer3"):
        block = f"{stage}.0"
        expected += layer(f"{block}.conv1") + bn(f"{block}.bn1") + layer(f"{block}.conv2") \
            + bn(f"{block}.bn2") + [f"{block}.relu1.alpha", f"{block}.relu2.alpha"]
        if stage != "layer1":
            expected += [f"{block}.downsample.0.weight"] + bn(f"{block}.downsample.1")
    expected += layer("fc", bias=True)
    assert [n for n, _ in resnet(depth=8, act=2).to_bits_(8).named_parameters()] == expected


def test_a_file_that_does_not_fit_names_the_tensor_and_both_shapes(tmp_path):
    model = resnet(depth=8).to_bits_(8)
    cases = []
    ckpt = release_layout(model)
    ckpt["Nbit_dict"]["layer1.0.conv2"] = [6, 0]
    cases.append((ckpt, "layer1.0.conv2.pweight: file (16, 16, 3, 3, 8) vs model (16, 16, 3, 3, 6)"))
    ckpt = release_layout(model)
    ckpt["state_dict"]["module.conv1.scale"] = torch.ones(2)
    cases.append((ckpt, "conv1.scale: file (2,) vs model ()"))
    ckpt = release_layout(model)
    del ckpt["state_dict"]["module.bn1.running_var"]
    cases.append((ckpt, "bn1.running_var: missing from the file"))
    ckpt = release_layout(model)
    ckpt["state_dict"]["module.layer1.0.conv1.weight"] = torch.zeros(16, 16, 3, 3)
    cases.append((ckpt, "layer1.0.conv1.weight: in the file, not in this model"))
    for i, (ckpt, words) in enumerate(cases):
        torch.save(ckpt, tmp_path / f"{i}.pth.tar")
        with pytest.raises(CheckpointError, match=re.escape(words)):
            load_model_state(resnet(depth=8), load_checkpoint(tmp_path / f"{i}.pth.tar"))


@pytest.fixture(scope="module")
def release_files(tmp_path_factory, cifar10_root):
    """Release-layout files in all three forms; the bit one carries momentum (a real step)."""
    folder = tmp_path_factory.mktemp("release")
    bits = model_in("bits").train()
    optimizer = torch.optim.SGD(bits.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    bits(torch.randn(4, 3, 32, 32)).sum().backward()
    optimizer.step()
    bits.eval()
    torch.save(release_layout(bits, optimizer), folder / "bits.pth.tar")
    for form in ("finetune", "float"):
        torch.save(release_layout(model_in(form)), folder / f"{form}.pth.tar")
    test_loader = build_loaders("cifar10", cifar10_root, 128, 100, "cpu")[1]
    return folder, f"--depth 8 --data-root {cifar10_root}", test_loader


@pytest.mark.parametrize("form", ["bits", "finetune"])
def test_scripts_evaluate_release_files(release_files, form):
    folder, common, test_loader = release_files
    path = folder / f"{form}.pth.tar"
    fig = last_json(run_script(folder, "cifar_finetune.py", f"{common} --bin --evaluate --model {path}"))
    model = load_model_state(resnet(depth=8), load_checkpoint(path))
    assert fig["acc"] == evaluate(model, test_loader)["acc"]


def test_convert_takes_a_release_float_model_and_a_release_scheme(release_files):
    folder, common, _ = release_files
    fig = last_json(run_script(folder, "convert.py", f"{common} --model float.pth.tar --dict "
                               "bits.pth.tar --checkpoint converted"))
    scheme = {k: v for k, v in release_layout(model_in("bits"))["Nbit_dict"].items()
              if k not in SHORTCUTS}
    expected = load_model_state(resnet(depth=8), load_checkpoint(folder / "float.pth.tar"))
    expected.to_bits_(scheme)
    converted = load_checkpoint(folder / "converted" / "model_best.pth.tar")
    assert fig["scheme"] == expected.scheme()
    for key, value in expected.state_dict().items():
        assert torch.equal(converted["state_dict"][key], value), key


def test_finetune_and_resume_from_a_release_bit_file(release_files):
    folder, common, _ = release_files
    fig = last_json(run_script(folder, "cifar_finetune.py", f"{common} --bin --model "
                               "bits.pth.tar --epochs 1 --checkpoint ft"))
    best = load_model_state(resnet(depth=8), load_checkpoint(folder / "ft" / "best_bin.pth.tar"))
    assert best.scheme() == fig["scheme"] == model_in("bits").scheme()
    # The file is at epoch 1 of 2 and no re-quantization falls on epoch 1: its momentum is used.
    run_script(folder, "cifar_prune_STE.py", f"{common} --bin --L1 --resume bits.pth.tar "
               "--epochs 2 --Prun_Int 2 --checkpoint resumed")
    resumed = load_checkpoint(folder / "resumed" / "checkpoint.pth.tar")
    assert resumed["epoch"] == 2
    rows = (folder / "resumed" / "log.txt").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows] == ["epoch", "2"]


@pytest.mark.skipif(not os.path.isdir(RELEASE_DIR), reason="the release's own checkpoints are not "
                    "here (set BSQ_RELEASE_CHECKPOINTS to their folder)")
def test_the_release_files_themselves(tmp_path):
    """Our float -> 8-bit conversion of the release's float ResNet-20 is bit for bit the file its
    own convert.py wrote (0-dim scales, module. keys)."""
    import gzip
    import shutil

    with gzip.open(os.path.join(RELEASE_DIR, "resnet-20-8bit.pth.tar.gz")) as f, \
            open(tmp_path / "8bit.pth.tar", "wb") as out:
        shutil.copyfileobj(f, out)
    theirs = load_checkpoint(tmp_path / "8bit.pth.tar")
    float_path = os.path.join(RELEASE_DIR, "resnet-20-float.pth.tar")
    ours = load_model_state(resnet(depth=20), load_checkpoint(float_path)).to_bits_(8)
    assert ours.scheme() == theirs["Nbit_dict"]
    state = theirs["state_dict"]
    for key, value in ours.state_dict().items():
        assert state[f"module.{key}"].shape == value.shape and torch.equal(state[f"module.{key}"],
                                                                          value), key
    loaded = load_model_state(resnet(depth=20), theirs)
    assert loaded.form == "bits" and loaded.scheme() == ours.scheme()
