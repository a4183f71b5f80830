"""Files laid out as the original release writes them (``helpers.release_layout``) load here
and compute exactly what the same weights in our own layout compute; what does not fit is named.

The release's layout: keys prefixed ``module.``, 0-dim ``scale``/``biasscale``, an ``Nbit_dict``
that may list the shortcut convs (older versions) and in bits form never says 0 (an all-zero
layer keeps one zero plane at precision 1), and only the fields ``epoch state_dict acc best_acc
optimizer`` (+ ``Nbit_dict``). Files of ours written before scales became 0-dim hold them as (1,).
"""
import os
import re

import pytest
import torch

from models import load_model_state
from utils.store.checkpoint import (
    CheckpointError,
    checkpoint_state,
    load_checkpoint,
    save_checkpoint,
)

from helpers import REPO, model_in, release_layout, resnet

RELEASE_DIR = os.environ.get("BSQ_RELEASE_CHECKPOINTS",
                             os.path.join(REPO, "..", "shared", "reference", "release-checkpoints"))


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
        loaded = load_model_state(resnet(depth=8, corrections=model.corrections),
                                  load_checkpoint(tmp_path / name)).eval()
        assert loaded.form == form
        assert torch.equal(loaded(images), expected), name


def test_our_files_store_0_dim_scales_like_the_release(tmp_path):
    save_checkpoint(checkpoint_state(model_in("bits")), tmp_path / "ours.pth.tar")
    state = load_checkpoint(tmp_path / "ours.pth.tar")["state_dict"]
    assert state["conv1.scale"].shape == () and state["fc.biasscale"].shape == ()


@pytest.mark.parametrize("form", ["bits", "finetune", "float"])
def test_parameters_are_in_the_release_order(form):
    """The release's modules register conv1, bn1, conv2, bn2, then the activations (PACT's
    alphas), then the shortcut; a bit layer holds pweight, nweight, scale (then the bias's),
    in finetune form its scales first (scale, biasscale, weight, bias), so optimizer states
    line up in every form."""
    order = {"bits": ("pweight", "nweight", "scale", "pbias", "nbias", "biasscale"),
             "finetune": ("scale", "biasscale", "weight", "bias"),
             "float": ("weight", "bias")}[form]

    def layer(name, bias=False):
        return [f"{name}.{k}" for k in order
                if bias or k not in ("pbias", "nbias", "biasscale", "bias")]

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
    model = resnet(depth=8, act=2).to_bits_(8)
    if form != "bits":
        getattr(model.to_finetune_(), f"to_{form}_")()
    assert [n for n, _ in model.named_parameters()] == expected


def test_a_file_that_does_not_fit_names_the_tensor_and_both_shapes(tmp_path):
    model = resnet(depth=8).to_bits_(8)
    cases = []
    ckpt = release_layout(model)
    ckpt["Nbit_dict"]["layer1.0.conv2"] = [6, 0]
    cases.append((ckpt, "layer1.0.conv2.pweight: file (16, 16, 3, 3, 8) vs model "
                        "(16, 16, 3, 3, 6)"))
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
