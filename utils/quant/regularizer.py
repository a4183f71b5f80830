"""The bit-level group-Lasso regularizer with memory-aware reweighing (the paper's Eq. 5).

docs/method.md, "Objective". The sums run in the release's order: per bit plane over the
concatenation of ``p`` and ``n``, per tensor over its planes, then tensor after tensor in module
order. The step adds ``alpha * B / TP`` to the cross-entropy, also in the release's order.
"""
import torch

EPS = 1e-8


class PlaneSquares(torch.autograd.Function):
    """``sum_elements(p_i^2 + n_i^2)`` for each plane i: (..., N) planes ``p, n`` -> (N,).

    The value is the release's ``sum(cat((p, n))^2)`` over every axis but the last; the gradients
    ``2 p g_i`` and ``2 n g_i`` are autograd's bit for bit (doubling is exact), computed in one
    pass over each plane tensor where autograd takes several over their concatenation.
    """

    @staticmethod
    def forward(ctx, p, n):
        ctx.save_for_backward(p, n)
        return torch.cat((p, n)).pow(2).sum(dim=tuple(range(p.dim() - 1)))  # (N,)

    @staticmethod
    def backward(ctx, grad):
        p, n = ctx.saved_tensors
        twice = 2 * grad  # (N,) broadcast over the elements
        return p * twice, n * twice


def bit_group_lasso(groups):
    """``B`` of Eq. 5 as a differentiable 0-dim tensor; the step adds ``alpha * B / TP``.

    ``groups`` holds one ``(p, n, nbits)`` triple per quantized tensor (a layer's weight, the
    classifier's bias) in module order, with planes of shape (..., N). Each bit plane is one group
    holding both its ``p`` and ``n`` bits:
    ``B = sum_l (#elements_l * N_l) * sum_i sqrt(sum_elements(p_i^2 + n_i^2) + 1e-8)``.
    Tensors at precision 0 are left out (their reweighing factor is zero); with none left, B = 0.
    """
    terms = [torch.sqrt(EPS + PlaneSquares.apply(p, n)).sum() * (p[..., 0].numel() * nbits)
             for p, n, nbits in groups if nbits]
    if not terms:
        return groups[0][0].new_zeros(())
    return sum(terms[1:], terms[0])  # left to right, as the release accumulates it
