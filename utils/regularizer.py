"""The bit-level group-Lasso regularizer with memory-aware reweighing (the paper's Eq. 5)."""
import torch

EPS = 1e-8


class PlaneSquares(torch.autograd.Function):
    """``sum_elements(p_i^2 + n_i^2)`` for each plane i: (..., N) planes ``p, n`` -> (N,).

    The values and gradients (``2 p g_i``, ``2 n g_i``) are autograd's, bit for bit; the
    backward is one pass over each plane tensor where autograd's chain of square, add and sum
    takes several. The planes are the largest tensors of a BSQ step, so this shows on a CPU.
    """

    @staticmethod
    def forward(ctx, p, n):
        ctx.save_for_backward(p, n)
        return (p.square() + n.square()).reshape(-1, p.shape[-1]).sum(0)

    @staticmethod
    def backward(ctx, grad):
        p, n = ctx.saved_tensors
        twice = 2 * grad  # (N,) broadcast over the elements
        return p * twice, n * twice


def bit_group_lasso(groups, total_params):
    """``B / TP`` as a differentiable scalar, so that ``loss = CE + alpha * B / TP``.

    ``groups`` holds one ``(p, n, nbits)`` triple per quantized tensor (a layer's weight, the
    classifier's bias), with planes of shape (..., N). Each bit plane is one group holding both
    its ``p`` and ``n`` bits:
    ``B = sum_l (#elements_l * N_l) * sum_i sqrt(sum_elements(p_i^2 + n_i^2) + 1e-8)``.
    ``total_params`` is TP, the number of quantized weights. Tensors at precision 0 are left out
    (their reweighing factor is zero).
    """
    terms = []
    for p, n, nbits in groups:
        if nbits == 0:
            continue
        squares = PlaneSquares.apply(p, n)  # (N,) one sum per plane
        terms.append(p[..., 0].numel() * nbits * torch.sqrt(squares + EPS).sum())
    return torch.stack(terms).sum() / total_params
