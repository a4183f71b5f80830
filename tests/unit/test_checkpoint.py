"""Checkpoints: the original release's layout, our round trip, and safe loading."""
import os

import pytest
import torch

from models import load_model_state
from utils.quant.corrections import CORRECTED, RELEASE
from utils.store.checkpoint import (
    CheckpointError,
    checkpoint_state,
    load_checkpoint,
    save_checkpoint,
)

from helpers import malicious_checkpoint, resnet


@pytest.fixture
def images():
    return torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def release_bits(weight, nbits):
    """The release's float -> bits, written out independently: planes (MSB first) and scale."""
    s = weight.abs().max()
    code = torch.round(weight.abs() * (2 ** nbits - 1) / s).long()
    digits = torch.stack([(code >> (nbits - 1 - i)) & 1 for i in range(nbits)], -1).float()
    positive = (weight > 0).unsqueeze(-1).float()
    negative = (weight < 0).unsqueeze(-1).float()
    dequantized = code.float() / (2 ** nbits - 1) * torch.sign(weight) * s
    return digits * positive, digits * negative, s, dequantized  # the release stores S 0-dim


def test_release_bit_checkpoint_loads_with_identical_logits(images, tmp_path):
    torch.manual_seed(0)
    source = resnet(depth=8, num_classes=10).eval()
    quant = {"conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "layer2.0.conv2",
             "layer3.0.conv1", "layer3.0.conv2", "fc"}
    state, nbit_dict = {}, {}
    for key, value in source.state_dict().items():
        layer, _, leaf = key.rpartition(".")
        if layer in quant and leaf in ("weight", "bias"):
            nbits = 6 if leaf == "weight" else 4
            p, n, s, deq = release_bits(value, nbits)
            stem = "weight" if leaf == "weight" else "bias"
            state[f"module.{layer}.p{stem}"] = p
            state[f"module.{layer}.n{stem}"] = n
            state[f"module.{layer}.{'scale' if leaf == 'weight' else 'biasscale'}"] = s
            value.copy_(deq)  # the source now computes with the dequantized weights
            nbit_dict[layer] = [6, 4 if layer == "fc" else 0]
        else:
            state[f"module.{key}"] = value
    path = tmp_path / "release.pth.tar"
    torch.save({"state_dict": state, "Nbit_dict": nbit_dict, "epoch": 350, "acc": 90.0,
                "best_acc": 90.0, "optimizer": {}}, path)

    model = load_model_state(resnet(depth=8), load_checkpoint(path)).eval()
    assert model.form == "bits" and model.scheme() == nbit_dict
    assert torch.equal(model(images), source(images))


def test_release_float_checkpoint_loads(images, tmp_path):
    source = resnet(depth=8).eval()
    path = tmp_path / "float.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()},
                "epoch": 1, "acc": 1.0, "best_acc": 1.0}, path)
    model = load_model_state(resnet(depth=8), load_checkpoint(path)).eval()
    assert model.form == "float" and torch.equal(model(images), source(images))


@pytest.mark.parametrize("corrections", [RELEASE, CORRECTED], ids=["release", "corrected"])
@pytest.mark.parametrize("form", ["bits", "finetune", "float"])
def test_our_checkpoint_round_trips(form, corrections, images, tmp_path):
    torch.manual_seed(0)
    model = resnet(depth=8, act=2, corrections=corrections).to_bits_(8)
    with torch.no_grad():  # a mixed scheme: empty top planes in some layers, a dead one
        model.conv1.pweight[..., :3] = 0
        model.conv1.nweight[..., :3] = 0
        model.layer2[0].conv2.pweight.zero_()
        model.layer2[0].conv2.nweight.zero_()
        model.layer1[0].relu1.alpha.fill_(3.0)
    model.requantize_()
    getattr(model, {"bits": "to_bits_", "finetune": "to_finetune_", "float": "to_float_"}[form])()
    model.eval()
    path = tmp_path / "ours.pth.tar"
    save_checkpoint(checkpoint_state(model, epoch=3, acc=50.0, best_acc=51.0), path)
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 3 and ckpt["arch"]["depth"] == 8 and ckpt["arch"]["form"] == form
    loaded = load_model_state(resnet(depth=8, act=2, corrections=corrections), ckpt).eval()
    assert loaded.form == form
    if form != "float":
        dead = 1 if form == "bits" and corrections == RELEASE else 0  # the release keeps 1 bit
        assert loaded.scheme() == model.scheme()
        assert loaded.conv1.precision() == [5, 0]
        assert loaded.layer2[0].conv2.precision() == [dead, 0]
    assert torch.equal(loaded(images), model(images))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    path = tmp_path / "evil.pth.tar"
    malicious_checkpoint(path, marker)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: unsafe loading runs it
    assert marker.exists()


def test_checkpoint_of_another_depth_or_class_count(tmp_path):
    path = tmp_path / "r8.pth.tar"
    save_checkpoint(checkpoint_state(resnet(depth=8, num_classes=100).to_bits_(8)), path)
    with pytest.raises(CheckpointError, match="--depth 8"):
        load_model_state(resnet(depth=20, num_classes=100), load_checkpoint(path))
    with pytest.raises(CheckpointError, match="100 classes"):
        load_model_state(resnet(depth=8, num_classes=10), load_checkpoint(path))


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth.tar")
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(junk)
    good = tmp_path / "good.pth.tar"
    save_checkpoint(checkpoint_state(resnet(depth=8)), good)
    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(truncated)


def test_atomic_save_replaces_whole_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "ckpt.pth.tar"
    save_checkpoint({"state_dict": {"a": torch.zeros(2)}}, path)
    save_checkpoint({"state_dict": {"a": torch.ones(2)}}, path)
    assert torch.equal(load_checkpoint(path)["state_dict"]["a"], torch.ones(2))
    assert os.listdir(tmp_path) == ["ckpt.pth.tar"]
