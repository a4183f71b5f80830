"""The straight-through estimators: forward formulas and the gradients they pass."""
import pytest
import torch

from models import BitLinear
from utils.quant.bits import plane_value, plane_weights
from utils.quant.ste import ActQuant, PACTClip, WeightQuant

import release_arith as release

FP32_EPS = torch.finfo(torch.float32).eps


@pytest.mark.parametrize("nbits", range(1, 9))
def test_weight_quant_matches_formula(nbits):
    x = torch.randn(1000) * 0.8  # some values outside [-1, 1]
    step = 2 ** nbits - 1
    x64 = x.double()
    expected = torch.sign(x64) * torch.round(x64.clamp(-1, 1).abs() * step) / step
    torch.testing.assert_close(WeightQuant.apply(x, nbits).double(), expected,
                               rtol=FP32_EPS, atol=0)
    assert WeightQuant.apply(x, nbits).unique().numel() <= 2 * step + 1


def test_weight_quant_passes_gradient_straight_through():
    x = torch.randn(50, requires_grad=True) * 3
    x.retain_grad()
    g = torch.randn(50)
    (WeightQuant.apply(x, 3) * g).sum().backward()
    assert torch.equal(x.grad, g)


def test_plane_gradient_is_scale_times_plane_weight_times_upstream():
    """dL/dp_i = scale * e_i * dL/dW and dL/dn_i = -scale * e_i * dL/dW (hand computation)."""
    torch.manual_seed(0)
    layer = BitLinear(3, 2, bias=False)
    layer.to_bits_({"weight": 4})
    with torch.no_grad():
        layer.pweight.uniform_(0, 1.5)
        layer.nweight.uniform_(0, 0.5)
        layer.scale.fill_(0.37)
    upstream = torch.randn(2, 3)
    (layer.quantized("weight") * upstream).sum().backward()
    e = [2.0 ** (3 - i) / 15 for i in range(4)]
    for i in range(4):
        expected = 0.37 * e[i] * upstream
        torch.testing.assert_close(layer.pweight.grad[..., i], expected, rtol=FP32_EPS * 4, atol=0)
        torch.testing.assert_close(layer.nweight.grad[..., i], -expected, rtol=FP32_EPS * 4, atol=0)
    w = plane_value(layer.pweight, layer.nweight).detach()
    q = torch.sign(w) * torch.round(w.clamp(-1, 1).abs() * 15) / 15
    torch.testing.assert_close(layer.scale.grad, (q * upstream).sum())


def test_plane_weights():
    for nbits in range(1, 9):
        e = plane_weights(nbits)
        assert e.shape == (nbits,)
        assert e.sum().item() == pytest.approx(1.0, abs=FP32_EPS * nbits)
        assert torch.all(e[:-1] == 2 * e[1:])


def act_inputs(nbits, seed):
    """Random activations at several ranges, exact ties of the rounding, their fp32 neighbours,
    an all-equal tensor and an all-zero one."""
    g = torch.Generator().manual_seed(seed)
    step = 2 ** nbits - 1
    # with the maximum S = k in the tensor, x = m + 1/2 gives x k / S = m + 1/2 exactly: a tie
    ties = torch.cat([torch.arange(step) + 0.5, torch.tensor([float(step)])])
    near = torch.cat([ties, ties.nextafter(torch.tensor(-1.0)), torch.tensor([float(step)])])
    randoms = [torch.relu(torch.randn(4, 8, 5, 5, generator=g)) * s for s in (1e-3, 1.0, 6.0)]
    return randoms + [torch.randn(300, generator=g) * 3, ties, near, torch.full((7,), 0.3),
                      torch.zeros(5)]


@pytest.mark.parametrize("nbits", range(1, 9))
def test_act_quant_is_the_release_formula_bit_for_bit(nbits):
    for x in act_inputs(nbits, seed=nbits):
        out = ActQuant.apply(x, nbits)
        assert torch.equal(out, release.act_quant(x, nbits)), x
        assert out.unique().numel() <= 2 * (2 ** nbits - 1) + 1


def test_act_quant_operation_order_matters():
    """``(S r) / k`` instead of ``S (r / k)`` differs in fp32: the order is worth a test."""
    x = torch.relu(torch.randn(10000, generator=torch.Generator().manual_seed(0))) * 2.7
    s, step = x.max(), 15
    r = torch.round(x * step / s)
    ours = ActQuant.apply(x, 4)
    assert torch.equal(ours, release.act_quant(x, 4)) and not torch.equal(ours, s * r / step)


def test_act_quant_zero_tensor_and_gradient():
    assert torch.equal(ActQuant.apply(torch.zeros(3, 3), 4), torch.zeros(3, 3))
    x = torch.rand(20, requires_grad=True)
    g = torch.randn(20)
    (ActQuant.apply(x, 4) * g).sum().backward()
    assert torch.equal(x.grad, g)


def test_pact_clips_and_routes_gradients():
    alpha = torch.tensor(1.5, requires_grad=True)
    x = torch.tensor([-1.0, 0.0, 0.7, 1.5, 2.0, 3.0], requires_grad=True)
    y = PACTClip.apply(x, alpha)
    assert torch.equal(y.detach(), torch.tensor([0.0, 0.0, 0.7, 1.5, 1.5, 1.5]))
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    (y * g).sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 2.0, 3.0, 4.0, 0.0, 0.0]))  # x == alpha: both
    assert alpha.grad.shape == alpha.shape
    assert alpha.grad.item() == 4.0 + 5.0 + 6.0


def test_quantizers_equal_the_sign_magnitude_formulas_bit_for_bit():
    """The quantizers compute ``round(x k)`` for ``sign(x) round(|x| k)``: equal, ties included."""
    torch.manual_seed(0)
    for nbits in range(1, 9):
        step = 2 ** nbits - 1
        ties = (torch.arange(-step, step, dtype=torch.float32) + 0.5) / step  # x step ~ m + 1/2
        up, down = torch.tensor(2.0), torch.tensor(-2.0)
        near = torch.cat([ties, ties.nextafter(up), ties.nextafter(down)])
        x = torch.cat([near, torch.randn(2000) * 0.8, torch.tensor([0.0, -0.0, 1.0, -1.0, 3.0])])
        literal = torch.sign(x) * torch.round(x.clamp(-1, 1).abs() * step) / step
        assert torch.equal(WeightQuant.apply(x, nbits), literal)
        assert torch.equal(ActQuant.apply(x, nbits), release.act_quant(x, nbits))
