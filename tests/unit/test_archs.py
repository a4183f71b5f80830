"""Every network through the one swap: each registry entry (at a tiny size) and a researcher's own
network (``tests/nets.py``: a ReLU module called twice, a functional ReLU, a depthwise conv,
BatchNorms not named ``bn``, dropout, a linear head)."""
import argparse
import copy

import numpy as np
import pytest
import torch
import torch.fx as fx
import torch.nn as nn

from models import ARCHS, BitLayer, build_model, get_arch, load_model
from models import onnx as graph
from models.activation import ActQuantizer
from models.packed import pack, same_weights, unpack
from models.swap import ACTIVATION_FUNCTIONS, ACTIVATION_METHODS, ACTIVATION_MODULES
from utils.quant.corrections import CORRECTED
from utils.store.checkpoint import checkpoint_state, save_checkpoint

TINY = {  # each registry entry at a size a test can afford, and the test network
    "resnet": {"depth": 8},
    "preresnet": {"depth": 8},
    "preresnet/bottleneck": {"depth": 11, "block_name": "Bottleneck"},
    "resnext": {"depth": 11, "cardinality": 2, "widen_factor": 4},
    "wrn": {"depth": 10, "widen_factor": 1, "drop": 0.3},
    "densenet": {"depth": 10, "growthRate": 4, "drop": 0.2},
    "alexnet": {},
    **{f"vgg{d}{bn}": {"width": 1 / 16} for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    "nets:tiny": {},
}
ONNX_TOL = 1e-4  # as tests/unit/test_onnx.py


def arch(key):
    return key.split("/")[0]


def build(key, act=4, corrections=CORRECTED, seed=0):
    torch.manual_seed(seed)
    return build_model(arch(key), 10, act, corrections, **TINY[key])


def float_net(key, seed=0):
    """The entry's own float network, as its authors define it, drawn from the same seed."""
    entry = get_arch(arch(key))
    flags = {k: v for k, v in TINY[key].items() if k not in entry.flag_names}
    torch.manual_seed(seed)
    return entry.build(num_classes=10, **entry.config(TINY[key]), **flags)


def images(n=4, seed=1):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def randomize_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model


def test_every_registry_entry_has_a_tiny_size_here():
    assert set(ARCHS) <= {arch(k) for k in TINY}


@pytest.mark.parametrize("key", TINY)
def test_the_swap_keeps_every_layer_its_weights_and_the_forward(key):
    net, model = float_net(key), build(key, act=0)
    entry = get_arch(arch(key))
    layers = {n: m for n, m in net.named_modules() if type(m) in (nn.Conv2d, nn.Linear)}
    bit = dict(model.quant_layers())
    assert set(bit) == {n for n in layers if not any(
        __import__("fnmatch").fnmatchcase(n, p) for p in entry.float_layers)}
    for name, layer in bit.items():
        old = layers[name]
        for attr in ("stride", "padding", "dilation", "groups", "in_channels", "in_features"):
            assert getattr(layer, attr, None) == getattr(old, attr, None), (name, attr)
        assert torch.equal(layer.weight, old.weight)
        assert (layer.bias is None) == (old.bias is None)
        assert layer.bias is None or torch.equal(layer.bias, old.bias)
    if not entry.release:  # --act 0: no quantizer, so the float form is the network itself
        x = images()
        assert torch.equal(model.eval()(x), net.eval()(x))


def activation_sites(net):
    """The activation call sites of a float network's forward pass, in train and eval mode."""
    counts = []
    for training in (True, False):
        net.train(training)
        g = fx.Tracer().trace(net)
        modules = dict(net.named_modules())
        counts.append(sum(
            (n.op == "call_module" and isinstance(modules[n.target], ACTIVATION_MODULES))
            or (n.op == "call_function" and n.target in ACTIVATION_FUNCTIONS)
            or (n.op == "call_method" and n.target in ACTIVATION_METHODS) for n in g.nodes))
    return max(counts)


@pytest.mark.parametrize("key", TINY)
def test_each_activation_call_site_but_the_stems_gets_its_own_quantizer(key):
    model = build(key, act=2)
    quantizers = [m for m in model.modules() if isinstance(m, ActQuantizer)]
    assert len(quantizers) == activation_sites(float_net(key)) - 1
    assert len({id(q) for q in quantizers}) == len(quantizers)
    calls = {id(q): 0 for q in quantizers}
    for q in quantizers:
        q.register_forward_hook(lambda m, i, o: calls.__setitem__(id(m), calls[id(m)] + 1))
    for training in (True, False):
        model.train(training)(images(2))
    assert set(calls.values()) == {2}  # each once per forward pass, in both modes
    alphas = [n for n, _ in model.named_parameters() if n.endswith(".alpha")]
    assert len(alphas) == len(quantizers)  # PACT: one clipping level per call site


@pytest.mark.parametrize("key", TINY)
def test_forms_round_trip_with_the_forward_unchanged(key):
    model = randomize_bn(build(key)).to_bits_(5).eval()
    x = images()
    bits = model(x)
    assert torch.equal(model.to_finetune_()(x), bits)
    assert torch.equal(model.to_bits_()(x), bits)
    assert torch.equal(model.to_float_()(x), bits)


@pytest.mark.parametrize("key", TINY)
def test_a_bsq_step_lowers_the_regularizer_and_clamps_no_batchnorm(key):
    """The method's step (``build``'s default): the clamp takes bit planes only, on every
    network; the release's ResNet clamps its shortcut BatchNorm only with ``RELEASE``."""
    model = build(key)
    model.to_bits_(4).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tp, x, y = model.size()[0], images(4), torch.arange(4)
    first = model.regularizer().item()
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(x), y) + 5.0 * model.regularizer() / tp
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.clamp_()
    assert model.regularizer().item() < first
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bn:
            m.weight.fill_(5.0), m.bias.fill_(-5.0)
    model.clamp_()
    assert all(torch.all(m.weight == 5.0) and torch.all(m.bias == -5.0) for m in bn)


@pytest.mark.parametrize("key", [k for k in TINY if arch(k) != "resnet"])
def test_without_corrected_no_batchnorm_is_clamped_either(key):
    from utils.quant.corrections import RELEASE

    model = build(key, corrections=RELEASE).to_bits_(2)
    assert model.corrections.clamp  # the release's name rule is its ResNet's alone
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(5.0)
    model.clamp_()
    clamped = {n for n, p in model.named_parameters() if torch.all(p == 2.0)}
    planes = {f"{name}.{t}" for name, m in model.quant_layers() for t in
              ("pweight", "nweight", "pbias", "nbias") if getattr(m, t, None) is not None}
    assert clamped == planes


@pytest.mark.parametrize("key", TINY)
def test_requantization_at_a_high_alpha_drops_planes(key):
    model = build(key).to_bits_(4)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    for _ in range(2):  # the regularizer alone, at a huge alpha: planes go to zero
        opt.zero_grad()
        (1e3 * model.regularizer() / model.size()[0]).backward()
        opt.step()
        model.clamp_()
    model.requantize_()
    assert model.avg_bits() < 4


@pytest.mark.parametrize("key", TINY)
@pytest.mark.parametrize("form", ["float", "bits", "finetune"])
def test_save_and_reload_in_every_form_rebuilds_the_network(key, form, tmp_path):
    model = randomize_bn(build(key, act=2)).to_bits_(3)
    if form != "bits":
        getattr(model, f"to_{form}_")()
    path = str(tmp_path / "ckpt.pth.tar")
    save_checkpoint(checkpoint_state(model, args=argparse.Namespace(corrected=True)), path)
    loaded, ckpt = load_model(path)  # the network its arch record names
    assert ckpt["arch"]["arch"] == arch(key) and loaded.form == form
    assert type(loaded).__name__ == type(model).__name__
    x = images()
    assert torch.equal(loaded.eval()(x), model.eval()(x))


def mixed(key, act=4):
    """The network at precisions 1..8 per layer (bias 3), random BatchNorm statistics."""
    model = randomize_bn(build(key, act=act))
    return model.to_bits_({name: [i % 8 + 1, 3]
                           for i, (name, _) in enumerate(model.quant_layers())}).eval()


@pytest.mark.parametrize("key", TINY)
def test_the_packed_file_rebuilds_the_network_bit_for_bit(key, tmp_path):
    model = mixed(key)
    path = str(tmp_path / "model.bsq")
    pack(model, path)
    unpacked, _ = unpack(path)
    assert same_weights(model, unpacked)
    x = images(5)
    assert torch.equal(unpacked.eval()(x), model(x))


@pytest.mark.parametrize("key", TINY)
def test_onnx_runtime_computes_the_networks_logits(key):
    """Without activation quantizers (``--act 0``): with them, one fp32 ulp of difference in a
    batch's largest activation may flip that batch's rounding (README, ONNX), and
    tests/unit/test_onnx.py checks the quantizer bit for bit on its own."""
    model = mixed(key, act=0)
    x = images(5)
    sess = graph.session(graph.build_graph(model).SerializeToString())
    theirs, ours = graph.logits(sess, x), model(x)
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs.numpy(), ours.detach().numpy(), atol=ONNX_TOL, rtol=0)


def test_a_model_built_twice_is_the_same_and_copies_are_independent():
    a, b = build("nets:tiny"), build("nets:tiny")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                   b.state_dict().values()))
    c = copy.deepcopy(a.to_bits_(4))
    with torch.no_grad():
        c.head.pweight.zero_()
    assert a.head.pweight.any() and isinstance(c.head, BitLayer)
    assert torch.equal(c.eval()(images()), c(images()))


def test_the_sweep_passes_the_network_and_its_flags_to_every_stage(tmp_path):
    import sweep
    from models import model_config

    args = sweep.get_args_parser().parse_args(
        ["--decays", "0.1", "-a", "wrn", "--depth", "10", "--widen-factor", "1", "--drop", "0.3"])
    model_config(args)
    stages, _ = sweep.plan(args, str(tmp_path))
    for stage in stages:
        flags = " ".join(stage.flags)
        assert "-a wrn --depth 10" in flags and "--widen-factor 1" in flags, stage.name
        assert "--drop 0.3" in flags, stage.name
