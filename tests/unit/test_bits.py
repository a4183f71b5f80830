"""Float <-> bits conversions, re-quantization and plane dropping (docs/method.md, steps 1-2)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models import BitConv2d, BitLinear
from utils.quant.bits import drop_planes, encode, plane_value, requantize
from utils.quant.corrections import CORRECTED, RELEASE

import release_arith as release

FP32_EPS = torch.finfo(torch.float32).eps
HALF_ULP = 2.0 ** -24  # relative error of one float32 rounding
SCALE_ROUNDINGS = 4  # re-quantization's fp32 chain on the scale: 2 on growth, 2 at the end


def decode(p, n):
    """The code ``sum_i (p_i - n_i) 2^(N-1-i)`` in float64: exact integers for 0/1 bits."""
    nbits = p.shape[-1]
    powers = torch.tensor([2.0 ** (nbits - 1 - i) for i in range(nbits)], dtype=torch.float64)
    return (p.double() - n.double()) @ powers  # (...,)


def symmetric_quantization(w, nbits):
    """The N-bit symmetric uniform quantization of w with range max|w|, in float64."""
    w = w.double()
    s, step = w.abs().max(), 2 ** nbits - 1
    return s * torch.round(w.abs() * step / s) / step * torch.sign(w)


@pytest.mark.parametrize("nbits", range(1, 9))
def test_float_bits_float_is_symmetric_uniform_quantization(nbits):
    torch.manual_seed(nbits)
    conv = BitConv2d(4, 6, 3, bias=False)
    original = conv.weight.detach().clone()
    conv.to_bits_({"weight": nbits})
    assert conv.pweight.shape == (6, 4, 3, 3, nbits)
    assert set(conv.pweight.unique().tolist()) <= {0.0, 1.0}
    assert not torch.any((conv.pweight > 0) & (conv.nweight > 0))
    conv.to_float_()
    torch.testing.assert_close(conv.weight.double(), symmetric_quantization(original, nbits),
                               rtol=4 * FP32_EPS, atol=0)


def test_linear_quantizes_weight_and_bias_separately():
    torch.manual_seed(0)
    fc = BitLinear(8, 3)
    w, b = fc.weight.detach().clone(), fc.bias.detach().clone()
    fc.to_bits_({"weight": 5, "bias": 3})
    assert fc.precision() == [5, 3]
    assert fc.pbias.shape == (3, 3) and fc.biasscale.item() == b.abs().max().item()
    fc.to_float_()
    for tensor, original, nbits in ((fc.weight, w, 5), (fc.bias, b, 3)):
        torch.testing.assert_close(tensor.double(), symmetric_quantization(original, nbits),
                                   rtol=4 * FP32_EPS, atol=0)


@given(st.integers(1, 8), st.lists(st.integers(-255, 255), min_size=1, max_size=40))
def test_encode_decode_round_trip(nbits, values):
    code = torch.tensor(values).clamp(-(2 ** nbits - 1), 2 ** nbits - 1)
    p, n = encode(code, nbits)
    assert p.shape == code.shape + (nbits,)
    assert torch.equal(decode(p, n), code.double())
    assert not torch.any((p > 0) & (n > 0))


# -- the invariant: re-quantize + drop planes with t = 0 keeps every dequantized weight -------

def dequantized(p, n, scale, nbits, clip=True):
    """Step 1's weights ``scale * round(w (2^N - 1)) / (2^N - 1)`` in float64, with w the planes'
    fp32 value (clipped to 2^N - 1 at 8 bits)."""
    step = 2 ** max(nbits, 1) - 1
    code = torch.round(plane_value(p, n) * step).double()
    if clip:
        code = code.clamp(-step, step) if nbits == 8 else code
    return scale.double() * code / step


STATES = ["random", "growth", "zero_msb", "zero_lsb", "one_plane", "all_zero", "exact"]


@st.composite
def bit_states(draw):
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    nbits = draw(st.integers(1, 8))
    kind = draw(st.sampled_from(STATES))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    gen = torch.Generator().manual_seed(seed)
    planes = shape + (nbits,)
    p = torch.rand(planes, generator=gen) * 2
    n = torch.rand(planes, generator=gen) * 2
    n = torch.where(torch.rand(planes, generator=gen) < 0.5, n, torch.zeros_like(n))
    if kind == "growth":
        p[..., 0] = 2.0  # w up to 2: magnitudes above 2^N - 1
        n[..., 0] = 0.0
    elif kind == "zero_msb":
        p[..., 0] = n[..., 0] = 0.0
    elif kind == "zero_lsb":
        p[..., -1] = n[..., -1] = 0.0
        p, n = p.round(), n.round() * (p.round() == 0)
    elif kind == "one_plane":
        keep = draw(st.integers(0, nbits - 1))
        mask = torch.zeros(nbits)
        mask[keep] = 1.0
        p, n = (p > 1).float() * mask, ((n > 1) & (p <= 1)).float() * mask
    elif kind == "all_zero":
        p, n = torch.zeros(planes), torch.zeros(planes)
    elif kind == "exact":
        p, n = (p > 1).float(), ((n > 1) & (p <= 1)).float()
    scale = torch.tensor(draw(st.floats(1e-3, 10.0)), dtype=torch.float32)
    return p, n, scale, nbits


@settings(max_examples=400, deadline=None)
@given(bit_states())
def test_requantize_keeps_every_dequantized_weight(state):
    p, n, scale, nbits = state
    before = dequantized(p, n, scale, nbits)
    p2, n2, scale2, nbits2 = requantize(p, n, scale, nbits, thre=0.0)
    after = dequantized(p2, n2, scale2, nbits2, clip=False)
    # Integer codes are carried exactly; the only roundings are the scale's fp32 chain.
    bound = (1 + HALF_ULP) ** SCALE_ROUNDINGS - 1
    assert torch.all((after - before).abs() <= bound * before.abs()), (before, after)
    # Exact 0/1 planes, p and n never both set, shapes match the precision.
    assert set(torch.cat([p2.flatten(), n2.flatten()]).unique().tolist()) <= {0.0, 1.0}
    assert not torch.any((p2 > 0) & (n2 > 0))
    assert p2.shape == p.shape[:-1] + (max(nbits2, 1),) and scale2.shape == scale.shape
    assert 0 <= nbits2 <= 8
    code = decode(p2, n2).abs()
    if nbits2 == 0:
        assert not torch.any(code) and not torch.any(before)
    elif nbits2 > 1:  # neither end plane is empty, so no all-zero plane was left behind
        assert torch.any(code >= 2 ** (nbits2 - 1)) and torch.any(code % 2 == 1)


@given(bit_states())
def test_requantize_is_idempotent_up_to_the_scale_chain(state):
    """Planes and precision do not move; the scale takes the release's ``* (2^N - 1) / (2^N - 1)``
    again, which is the identity up to two fp32 roundings."""
    once = requantize(*state)
    twice = requantize(*once)
    assert torch.equal(once[0], twice[0]) and torch.equal(once[1], twice[1])
    assert once[3] == twice[3]
    bound = (1 + HALF_ULP) ** 2 - 1
    assert abs(twice[2].item() - once[2].item()) <= bound * abs(once[2].item())


@settings(max_examples=300, deadline=None)
@given(bit_states(), st.sampled_from([0.0, 5.0, 20.0, 60.0]), st.booleans())
def test_requantize_is_the_release_arithmetic_bit_for_bit(state, thre, bias):
    """Planes, scale and precision equal the release's at every threshold, for weights and for
    the classifier's bias."""
    p, n, scale, nbits = state
    ours = requantize(p, n, scale, nbits, thre, RELEASE, bias=bias)
    theirs = release.requantize(p, n, scale, nbits, thre, bias)
    assert all(torch.equal(a, b) for a, b in zip(ours[:3], theirs[:3])) and ours[3] == theirs[3]


@settings(max_examples=200, deadline=None)
@given(bit_states(), st.sampled_from([0.0, 5.0, 20.0, 60.0]), st.booleans())
def test_drop_planes_is_the_releases_on_continuous_planes(state, thre, bias):
    """What the release does to a loaded bit model (its planes as they are, not rounded)."""
    ours = drop_planes(*state, thre, bias)
    theirs = release.prune(*state, thre, bias)
    assert all(torch.equal(a, b) for a, b in zip(ours[:3], theirs[:3])) and ours[3] == theirs[3]


@settings(max_examples=300, deadline=None)
@given(bit_states())
def test_the_corrected_requantize_is_the_releases_at_threshold_zero(state):
    """At t = 0 (the recipe's) the method's plane dropping is the release's, but for an
    all-zero tensor: precision 0 with ``--corrected``, one zero plane in the release."""
    p, n, scale, nbits = state
    ours = requantize(p, n, scale, nbits, 0.0, CORRECTED)
    theirs = requantize(p, n, scale, nbits, 0.0, RELEASE)
    assert all(torch.equal(a, b) for a, b in zip(ours[:3], theirs[:3]))
    assert max(ours[3], 1) == theirs[3] and (ours[3] > 0 or not theirs[0].any())


def test_a_single_sparse_msb_saturates_as_in_the_release():
    code = torch.tensor([7, 1, 2, 2, 2, 2, 2, 2, 2, 2, -3, 0])  # 1 of 12 has the MSB: 8.3%
    p, n = encode(code, 3)
    for thre in (5.0, 10.0, 40.0):
        ours = requantize(p, n, torch.tensor(0.8), 3, thre, CORRECTED)
        theirs = release.requantize(p, n, torch.tensor(0.8), 3, thre)
        assert all(torch.equal(a, b) for a, b in zip(ours[:3], theirs[:3])) and ours[3] == theirs[3]


def test_the_releases_slicing_loses_the_first_of_two_sparse_msbs():
    """Codes 4 and 2 (planes 100, 010) among many 1s: both MSB planes are sparse. The method
    ORs both into the LSB (4 -> 1, 2 -> 1); the release slices each from the planes as they
    were, so the first one's OR is lost (4 -> 0). At 1 bit the release's weights skip the
    saturation, its bias does not; here the sums equal 1, so both stay exact."""
    code = torch.tensor([4, 2] + [1] * 18)  # 5% and 5% in the two MSB planes
    p, n = encode(code, 3)
    release_p = requantize(p, n, torch.tensor(1.0), 3, 15.0, RELEASE)
    method_p = requantize(p, n, torch.tensor(1.0), 3, 15.0, CORRECTED)
    assert release_p[3] == method_p[3] == 1
    assert decode(*release_p[:2]).tolist()[:3] == [0, 1, 1]
    assert decode(*method_p[:2]).tolist()[:3] == [1, 1, 1]


def test_growth_adds_one_bit_and_rescales():
    p = torch.tensor([[2.0, 1.0]])  # w = (2 * 2 + 1) / 3 at N = 2: code 5 > 3
    n = torch.zeros(1, 2)
    p2, n2, scale2, nbits2 = requantize(p, n, torch.tensor(1.5), 2)
    assert nbits2 == 3
    assert p2.tolist() == [[1.0, 0.0, 1.0]]
    assert scale2.shape == () and scale2.item() == 3.5  # 1.5 * 7 / 3, exact in fp32


def test_eight_bits_clip_instead_of_growing():
    p = torch.full((3, 8), 2.0)
    p2, n2, scale2, nbits2 = requantize(p, torch.zeros(3, 8), torch.tensor(1.0), 8)
    assert nbits2 == 8 and torch.equal(p2, torch.ones(3, 8)) and scale2.item() == 1.0


def test_threshold_saturates_a_sparse_msb_and_drops_sparse_lsbs():  # in both orders
    # 10 weights at N = 3 with codes 7, 1, 2, 2, 2, 2, 2, 2, 2, 2 and t = 15%:
    # the MSB has 10% nonzeros (< 15%): OR-ed into lower planes, 7 -> 3, N = 2;
    # then the LSB has 2 of 10 nonzeros (20% > 15%): kept.
    code = torch.tensor([7, 1, 2, 2, 2, 2, 2, 2, 2, 2])
    p, n = encode(code, 3)
    p2, n2, scale2, nbits2 = requantize(p, n, torch.tensor(1.0), 3, thre=15.0)
    assert nbits2 == 2
    assert decode(p2, n2).tolist() == [3, 1, 2, 2, 2, 2, 2, 2, 2, 2]
    assert scale2.item() == pytest.approx(3 / 7, rel=HALF_ULP * 2)
    # With t = 25% the LSB (20%) goes too: codes halve (floor) and the step doubles.
    p3, n3, scale3, nbits3 = requantize(p, n, torch.tensor(1.0), 3, thre=25.0)
    assert nbits3 == 1 and decode(p3, n3).tolist() == [1, 0, 1, 1, 1, 1, 1, 1, 1, 1]
    assert scale3.item() == pytest.approx(2 * 1 / 7, rel=HALF_ULP * 2)


def test_layer_requantize_keeps_forward_output():
    torch.manual_seed(0)
    conv = BitConv2d(3, 4, 3, bias=False)
    conv.to_bits_({"weight": 8})
    with torch.no_grad():  # zero the top two and the bottom plane: 5 bits carry everything
        conv.pweight[..., :2] = 0
        conv.nweight[..., :2] = 0
        conv.pweight[..., -1] = 0
        conv.nweight[..., -1] = 0
    x = torch.randn(2, 3, 8, 8)
    y = conv(x)
    conv.requantize_()
    assert conv.precision() == [5, 0]
    np.testing.assert_allclose(conv(x).detach().numpy(), y.detach().numpy(), rtol=1e-5, atol=1e-6)
