"""Bit-operations: each conv and linear's MACs are torch's own count, its bits those the report
states, and BOPs their products; counting them changes nothing of the model."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from models import build_model
from models.packed import pack, unpack
from utils.report.scheme import scheme_dict


def torch_macs(model, shape):
    """``{layer: MACs}`` by ``torch.utils.flop_counter`` (2 FLOPs per MAC), and their total."""
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *shape))
    prefix = type(model).__name__ + "."
    per_module = {name[len(prefix):]: sum(ops.values()) // 2
                  for name, ops in counter.get_flop_counts().items() if name.startswith(prefix)}
    return per_module, counter.get_total_flops() // 2


@pytest.mark.parametrize("arch, shape", [("resnet", (3, 32, 32)),
                                         ("torchvision.resnet18", (3, 64, 64))])
def test_macs_are_torchs_own_count(arch, shape):
    model = build_model(arch, 10, act=4)
    model.input_shape = shape
    costs = model.costs()
    per_module, total = torch_macs(model, shape)
    assert {row["layer"]: row["macs"] for row in costs} == {
        row["layer"]: per_module[row["layer"]] for row in costs}
    assert sum(row["macs"] for row in costs) == total
    if arch == "resnet":
        assert total == 40_813_184  # ResNet-20, one 32x32 image


@pytest.mark.parametrize("act", [4, 2])
def test_bops_are_the_stated_macs_times_the_stated_bits(act):
    model = build_model("resnet", 10, act=act).to_bits_(6)
    model.conv1.to_bits_({"weight": 3, "bias": 3})
    report = scheme_dict(model)
    rows = {row["layer"]: row for row in report["costs"]}
    scheme = model.scheme()
    for name, row in rows.items():
        assert row["weight_bits"] == (scheme[name][0] if row["quantized"] else 32), name
        assert row["bops"] == row["macs"] * row["weight_bits"] * row["act_bits"]
    assert report["totals"]["BOPs"] == sum(r["macs"] * r["weight_bits"] * r["act_bits"]
                                           for r in rows.values())
    # the image, and the release's float stem ReLU, feed float values; every other conv and the
    # classifier (through the average pool) take a quantizer's
    assert rows["conv1"]["act_bits"] == rows["layer1.0.conv1"]["act_bits"] == 32
    assert {r["act_bits"] for n, r in rows.items() if n not in ("conv1", "layer1.0.conv1")} \
        == {act}
    assert not rows["layer2.0.downsample.0"]["quantized"]  # float, counted at 32-bit weights


def test_counting_changes_no_state_and_draws_no_random_numbers():
    model = build_model("resnet", 10, act=4).to_bits_(8).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    model.bops()
    assert torch.equal(torch.get_rng_state(), rng) and model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_the_packed_file_states_the_bops_it_was_counted_for(tmp_path):
    model = build_model("resnet", 10, act=4).to_bits_(4)
    header = pack(model, str(tmp_path / "m.bsq"))
    assert header["model"]["bops"] == model.bops() and header["model"]["input_shape"] == [3, 32, 32]
    unpacked, _ = unpack(str(tmp_path / "m.bsq"))
    assert unpacked.bops() == model.bops()
