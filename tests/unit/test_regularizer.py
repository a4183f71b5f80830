"""The bit-level group Lasso of Eq. 5: by hand, against the release's arithmetic, and its edges."""
import math

import torch

from utils.quant.corrections import CORRECTED
from utils.quant.regularizer import PlaneSquares, bit_group_lasso

import release_arith as release
from helpers import resnet


def test_value_and_gradient_by_hand():
    # Two weights at N = 2: plane 0 holds (p, n) = (1, 0), (0, 1); plane 1 holds (0.5, 0), (1, 0).
    p = torch.tensor([[1.0, 0.5], [0.0, 1.0]], requires_grad=True)
    n = torch.tensor([[0.0, 0.0], [1.0, 0.0]], requires_grad=True)
    reg = bit_group_lasso([(p, n, 2)])
    plane0, plane1 = 1.0 + 1.0, 0.25 + 1.0
    factor = 2 * 2  # #weights * N
    expected = factor * (math.sqrt(plane0 + 1e-8) + math.sqrt(plane1 + 1e-8))
    assert abs(reg.item() - expected) < 1e-6 * expected
    reg.backward()
    norms = torch.tensor([math.sqrt(plane0 + 1e-8), math.sqrt(plane1 + 1e-8)])
    torch.testing.assert_close(p.grad, factor * p.detach() / norms)
    torch.testing.assert_close(n.grad, factor * n.detach() / norms)


def test_reweighing_counts_each_layer_by_its_memory():
    small = (torch.ones(2, 1), torch.zeros(2, 1), 1)
    big = (torch.ones(8, 1), torch.zeros(8, 1), 1)
    # A plane of k ones has norm sqrt(k); the factor is k * N: 2 * sqrt(2) + 8 * sqrt(8).
    total = bit_group_lasso([small, big]).item()
    assert abs(total - (2 * math.sqrt(2) + 8 * math.sqrt(8))) < 1e-5


def continuous_bits_model():
    torch.manual_seed(0)
    model = resnet(depth=8).to_bits_(6)
    with torch.no_grad():
        for p, n, _ in (g for _, m in model.quant_layers() for g in m.bit_groups()):
            p.uniform_(0, 2), n.uniform_(0, 2)
    return model


def test_model_regularizer_is_the_release_arithmetic_bit_for_bit():
    model = continuous_bits_model()
    ours = model.regularizer()
    ours.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    theirs = release.bit_lasso([g for _, m in model.quant_layers() for g in m.bit_groups()])
    theirs.backward()
    assert torch.equal(ours, theirs)
    assert all(torch.equal(a, p.grad) for a, p in
               zip(grads, [p for p in model.parameters() if p.grad is not None]))


def by_hand(groups):
    """Eq. 5 in float64: per tensor, #weights * N * sum over planes of the plane's L2 norm (p and
    n together, + 1e-8 under the root)."""
    total = 0.0
    for p, n, nbits in groups:
        dims = tuple(range(p.dim() - 1))
        norms = ((p.double() ** 2).sum(dims) + (n.double() ** 2).sum(dims) + 1e-8).sqrt()
        total += p[..., 0].numel() * nbits * norms.sum().item()
    return total


def test_model_regularizer_skips_shortcut_convs_and_zero_layers():
    model = resnet(depth=20).to_bits_(8)
    groups = [g for _, m in model.quant_layers() for g in m.bit_groups()]
    assert len(groups) == 19 + 2  # 19 quantized convs, the classifier's weight and bias
    assert all(p.shape[2:4] != (1, 1) for p, _, _ in groups[:-2])  # no 1x1 shortcut conv
    assert sum(p[..., 0].numel() for p, _, _ in groups) == model.size()[0]
    expected = by_hand(groups)
    assert abs(model.regularizer().item() - expected) < 1e-5 * expected
    fc = model.fc
    with torch.no_grad():
        fc.pweight.zero_(), fc.nweight.zero_()
    fc.requantize_()
    assert fc.precision()[0] == 1  # the release keeps one zero plane (it counts sqrt(1e-8))
    groups = [g for _, m in model.quant_layers() for g in m.bit_groups()]
    assert model.regularizer().item() < expected
    assert abs(model.regularizer().item() - by_hand(groups)) < 1e-5 * expected


def test_a_model_with_every_tensor_at_precision_zero_has_regularizer_zero():
    model = resnet(depth=8, corrections=CORRECTED).to_bits_(4)
    with torch.no_grad():
        for p, n, _ in (g for _, m in model.quant_layers() for g in m.bit_groups()):
            p.zero_(), n.zero_()
    model.requantize_()
    assert all(v == [0, 0] for v in model.scheme().values())
    reg = model.regularizer()
    assert reg.shape == () and reg.item() == 0.0


def test_plane_squares_match_autograd_bit_for_bit():
    torch.manual_seed(0)
    for shape in [(16, 3, 3, 3, 8), (10, 64, 5), (10, 1)]:  # conv weight, fc weight, fc bias
        p, n = ((2 * torch.rand(shape)).requires_grad_() for _ in range(2))  # continuous bits
        upstream = torch.randn(shape[-1])
        reference = torch.sum(torch.cat((p, n), 0) ** 2, tuple(range(len(shape) - 1)))
        ref_grads = torch.autograd.grad(reference, (p, n), upstream)
        value = PlaneSquares.apply(p, n)
        grads = torch.autograd.grad(value, (p, n), upstream)
        assert torch.equal(value, reference)
        assert all(torch.equal(a, b) for a, b in zip(grads, ref_grads))
