"""The bit-level group-Lasso regularizer with memory-aware reweighing (the paper's Eq. 5)."""
import torch

EPS = 1e-8


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
        numel = p[..., 0].numel()
        squares = (p.square() + n.square()).reshape(numel, -1).sum(0)  # (N,) one sum per plane
        terms.append(numel * nbits * torch.sqrt(squares + EPS).sum())
    return torch.stack(terms).sum() / total_params
