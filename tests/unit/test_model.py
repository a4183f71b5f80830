"""The CIFAR ResNet: forms, size accounting, scheme, clamping, precision 0."""
import copy

import pytest
import torch

from models import ArchError, BitLayer
from utils.quant.bits import plane_value
from utils.quant.corrections import CORRECTED

from helpers import resnet


def names_of_quantized_layers(depth):
    n = (depth - 2) // 6
    blocks = [f"layer{s}.{b}.conv{c}" for s in (1, 2, 3) for b in range(n) for c in (1, 2)]
    return ["conv1", *blocks, "fc"]


@pytest.fixture
def images():
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_uniform_8bit_resnet20_is_exactly_4x():
    model = resnet(depth=20).to_bits_(8)
    assert model.compression() == 4.0
    total, bits = model.size()
    assert bits == 8 * total
    scheme = model.scheme()
    assert list(scheme) == names_of_quantized_layers(20)
    assert all(v == [8, 0] for k, v in scheme.items() if k != "fc") and scheme["fc"] == [8, 8]
    assert not any("downsample" in k for k in scheme)
    expected_tp = sum(m.weight.numel() for m in model.modules()
                      if isinstance(m, torch.nn.Conv2d) and not isinstance(m, BitLayer))
    params = sum(p.numel() for p in resnet(depth=20).parameters())
    assert total < params - expected_tp  # shortcut convs (and BatchNorm) are not counted


@pytest.mark.parametrize("depth,classes", [(8, 100), (32, 10)])
def test_depths_and_cifar100(depth, classes, images):
    model = resnet(depth=depth, num_classes=classes).eval()
    assert model(images).shape == (6, classes)
    assert list(model.to_bits_(4).scheme()) == names_of_quantized_layers(depth)


def test_depth_must_be_6n_plus_2():
    with pytest.raises(ArchError, match="6n\\+2"):
        resnet(depth=21)


def test_forms_give_identical_logits_when_corrected(images):
    torch.manual_seed(0)
    model = resnet(depth=8, num_classes=10, act=4, corrections=CORRECTED).to_bits_(6).eval()
    bits = model(images)
    assert torch.equal(model.to_finetune_()(images), bits)
    assert model.form == "finetune"
    assert torch.equal(model.to_bits_()(images), bits)
    assert torch.equal(model.to_float_()(images), bits)


def test_the_releases_forms(images):
    """As the release: the finetune form has no classifier bias in its forward pass (but keeps
    it), and the float form of bits is ``scale * sum_i (p_i - n_i) e_i``."""
    torch.manual_seed(0)
    model = resnet(depth=8, num_classes=10, act=4).to_bits_(6).eval()
    bits = model(images)
    no_bias = copy.deepcopy(model)
    with torch.no_grad():
        no_bias.fc.pbias.zero_(), no_bias.fc.nbias.zero_()
    model.to_finetune_()
    assert model.fc.quantized("bias") is None and model.fc.bias is not None
    assert not model.fc.bias.requires_grad  # unused: frozen, as DDP needs (and SGD skips it)
    assert torch.equal(model(images), no_bias(images)) and not torch.equal(model(images), bits)
    assert torch.equal(model.to_bits_()(images), bits)  # the bias came back with the bits
    expected = {name: plane_value(m.pweight, m.nweight) * m.scale
                for name, m in model.quant_layers()}
    model.to_float_()
    assert all(torch.equal(m.weight, expected[name]) for name, m in model.quant_layers())


def test_the_releases_clamp_takes_every_parameter_by_name():
    model = resnet(depth=8, act=2).to_bits_(8)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(2.5)
    model.clamp_()
    clamped = {n for n, p in model.named_parameters() if torch.all(p == 2.0)}
    assert clamped == {n for n, _ in model.named_parameters() if "scale" not in n and "bn" not in n}
    assert {"layer2.0.downsample.0.weight", "layer2.0.downsample.1.bias",
            "layer1.0.relu1.alpha", "fc.pbias"} <= clamped
    model.to_finetune_()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.7)
    model.clamp_()
    clamped = {n for n, p in model.named_parameters() if torch.all(p == 1.0)}
    assert clamped == {n for n, _ in model.named_parameters() if "weight" in n and "bn" not in n}
    assert "layer2.0.downsample.1.weight" in clamped and "fc.bias" not in clamped


def test_clamp_touches_only_the_method_tensors_when_corrected():
    model = resnet(depth=8, corrections=CORRECTED).to_bits_(8)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(2.5)
        model.conv1.nweight.fill_(-0.5)
    model.clamp_()
    assert torch.all(model.conv1.pweight == 2.0) and torch.all(model.conv1.nweight == 0.0)
    assert torch.all(model.fc.pbias == 2.0)
    shortcut, bn = model.layer2[0].downsample
    assert torch.all(shortcut.weight == 2.5) and torch.all(bn.weight == 2.5)
    assert torch.all(model.conv1.scale == 2.5) and torch.all(model.bn1.weight == 2.5)

    model.to_finetune_()
    with torch.no_grad():
        model.conv1.weight.fill_(1.7)
        shortcut.weight.fill_(1.7)
    model.clamp_()
    assert torch.all(model.conv1.weight == 1.0) and torch.all(shortcut.weight == 1.7)


def zeroed(corrections=CORRECTED):
    """An 8-bit ResNet-8 whose layer1.0.conv2 is all zero, re-quantized."""
    model = resnet(depth=8, corrections=corrections).to_bits_(8)
    with torch.no_grad():
        model.layer1[0].conv2.pweight.zero_()
        model.layer1[0].conv2.nweight.zero_()
    model.requantize_()
    return model, model.layer1[0].conv2


def test_precision_zero_layer_outputs_zero_and_stays_zero_when_corrected(images):
    model, conv = zeroed()
    assert conv.precision() == [0, 0] and conv.pweight.shape[-1] == 1
    assert torch.equal(conv.quantized("weight"), torch.zeros_like(conv.quantized("weight")))
    model(images).sum().backward()
    assert conv.pweight.grad is None and not conv.pweight.requires_grad
    total, bits = model.size()
    assert bits == 8 * (total - conv.pweight.numel())
    model.to_finetune_()
    assert model.layer1[0].conv2.precision() == [0, 0]


def test_the_releases_zero_layer_keeps_one_bit_and_its_gradients(images):
    model, conv = zeroed(corrections=resnet().corrections)
    assert conv.precision() == [1, 0] and conv.pweight.requires_grad
    total, bits = model.size()
    assert bits == 8 * (total - conv.pweight.numel()) + conv.pweight.numel()  # counted 1 bit
    model(images).sum().backward()
    assert conv.pweight.grad.abs().sum() > 0  # it can come back
    model.zero_grad()
    model.to_finetune_()
    conv = model.layer1[0].conv2
    assert conv.precision() == [0, 0] and model.size()[1] == bits - conv.weight.numel()
    out = conv.quantized("weight")
    assert not out.any()
    model(images).sum().backward()  # Q_0(w) = w * 0 passes the gradient straight through
    assert conv.weight.grad.abs().sum() > 0 and conv.scale.grad == 0


def test_activation_quantizers_follow_act():
    assert not any(n.endswith("alpha") for n, _ in resnet(depth=8, act=4).named_parameters())
    pact = [n for n, _ in resnet(depth=8, act=2).named_parameters() if n.endswith("alpha")]
    assert pact == ["layer1.0.relu1.alpha", "layer1.0.relu2.alpha", "layer2.0.relu1.alpha",
                    "layer2.0.relu2.alpha", "layer3.0.relu1.alpha", "layer3.0.relu2.alpha"]
    block = resnet(depth=8, act=4).layer1[0]
    x = torch.randn(2, 16, 8, 8) * 10
    out = block.relu1(x)
    assert out.max() <= 6.0 and out.unique().numel() <= 16
    assert torch.equal(resnet(depth=8, act=0).layer1[0].relu1(x), x.clamp(0, 10))


def test_bsq_training_step_and_regrowth():
    torch.manual_seed(0)
    model = resnet(depth=8).to_bits_(4)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    x, y, tp = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)), model.size()[0]
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(x), y) + 0.1 * model.regularizer() / tp
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.clamp_()
    assert all(0 <= t.min() and t.max() <= 2 for _, m in model.quant_layers()
               for t in m.clamp_targets())
    with torch.no_grad():
        model.conv1.pweight[0, 0, 0, 0, 0] = 2.0  # w > 1 somewhere: conv1 must grow a bit
    # Re-quantization rounds the continuous (unclipped) weights to the grid, growing as needed.
    before = {name: (m.scale * plane_value(m.pweight, m.nweight)).detach().clone()
              for name, m in model.quant_layers()}
    steps = {name: abs(m.scale.item()) / 15 for name, m in model.quant_layers()}
    model.requantize_()
    assert model.conv1.nbits["weight"] == 5
    for name, m in model.quant_layers():
        assert torch.all((m.quantized("weight") - before[name]).abs() <= steps[name] / 2 + 1e-6)


def test_autocast_keeps_the_quantizers_in_fp32(images):
    torch.manual_seed(0)
    model = resnet(depth=8).to_bits_(4).eval()
    expected = {name: m.quantized("weight") for name, m in model.quant_layers()}
    with torch.autocast("cpu", torch.bfloat16):
        for name, m in model.quant_layers():
            built = m.quantized("weight")
            assert built.dtype == torch.float32 and torch.equal(built, expected[name])
        x = torch.rand(2, 16, 8, 8).to(torch.bfloat16) * 5
        out = model.layer1[0].relu1(x)
        assert out.dtype == torch.float32
        assert out.unique().numel() <= 16  # exactly the 4-bit levels of the fp32 quantizer
        logits = model(images)
    assert logits.shape == (6, 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize("form", ["bits", "finetune"])
def test_a_test_pass_builds_each_weight_once_with_the_same_logits(form, monkeypatch):
    from utils.data.cifar import DeviceLoader
    from utils.train.engine import evaluate

    model = resnet(depth=8).to_bits_(4)
    if form == "finetune":
        model.to_finetune_()
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (40,), generator=gen)
    loader = DeviceLoader(x, y, 10, "cpu", False)  # 4 batches
    model.eval()
    with torch.no_grad():
        per_batch = [model(xb) for xb, _ in loader]
        with model.frozen_weights():
            once = [model(xb) for xb, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(per_batch, once))

    builds = []
    real = BitLayer._build
    monkeypatch.setattr(BitLayer, "_build", lambda self, *a: builds.append(1) or real(self, *a))
    evaluate(model, loader)
    layers = len(model.quant_layers())
    assert layers <= len(builds) <= 2 * layers  # each used slot once, not once per batch
    assert all(m.frozen is None for _, m in model.quant_layers())  # per batch again afterwards
