"""Straight-through estimators: the weight quantizer Q_N, the activation quantizer and PACT.

Each autograd function's ``backward`` returns exactly one gradient slot per ``forward`` input
(``None`` for the integer precision arguments). The forward passes compute the original
release's fp32 operations in its order (docs/method.md, "Operation order").
"""
import torch

SMALLEST_POSITIVE = 2.0 ** -149  # the smallest positive float32: a divisor that is never 0


def levels(nbits):
    """Number of nonzero magnitude steps of an N-bit code: ``2^N - 1``."""
    return 2 ** nbits - 1


class WeightQuant(torch.autograd.Function):
    """``Q_N(x) = sign(x) * round(|clip(x, -1, 1)| (2^N - 1)) / (2^N - 1)`` with ``dQ/dx = 1``.

    docs/method.md, "Bit representation": the forward pass of both the bit representation
    (``x = sum_i (p_i - n_i) e_i``) and the finetune form (``x = w``). The gradient is passed
    straight through everywhere, also where ``|x| > 1`` (continuous bits may exceed the range).
    ``Q_0(x) = x * 0``, as in the release.
    """

    @staticmethod
    def forward(ctx, x, nbits):
        if nbits == 0:
            return x * 0
        step = levels(nbits)
        return torch.round(x.clamp(-1.0, 1.0) * step).div_(step)  # see ``ActQuant``: no sign

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class ActQuant(torch.autograd.Function):
    """Per-tensor activation quantizer scaled by the batch maximum, gradient straight through.

    docs/method.md, "Activations": ``S = max|x|``, ``x_q = S * (round(|x| k / S) / k) * sign(x)``
    with ``k = 2^a - 1``, in exactly this order: one fp32 rounding elsewhere (``(S * r) / k``
    for ``S * (r / k)``) changes a BSQ training run. An all-zero tensor maps to zero. ``S``
    stays a device tensor, so no host synchronisation happens here. Computed in fp32.

    Both quantizers drop the sign-magnitude split: ``round`` rounds half to even, an odd
    function, and negating an fp32 product or quotient is exact, so ``round(x k) = sign(x)
    round(|x| k)`` bit for bit, with three fewer passes over the tensor.
    """

    @staticmethod
    def forward(ctx, x, nbits):
        step = levels(nbits)
        x = x.float()  # exact levels also when autocast hands over bf16
        s = x.detach().abs().amax().clamp_min(SMALLEST_POSITIVE)  # () per-batch range
        return s * (torch.round(x * step / s) / step)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class PACTClip(torch.autograd.Function):
    """PACT: ``y = clip(x, 0, alpha)`` with a learnable clipping level ``alpha``.

    As in the release, ``dy/dx = 1`` on ``0 <= x <= alpha`` and 0 elsewhere, and ``dL/dalpha``
    is the sum of the upstream gradients where ``x >= alpha`` (docs/method.md, "Activations"):
    at ``x == alpha`` both receive it.
    """

    @staticmethod
    def forward(ctx, x, alpha):
        ctx.save_for_backward(x, alpha)
        return torch.minimum(x.clamp(min=0), alpha)

    @staticmethod
    def backward(ctx, grad):
        x, alpha = ctx.saved_tensors
        grad_x = grad * ((x >= 0) & (x <= alpha))
        grad_alpha = (grad * (x >= alpha)).sum().reshape(alpha.shape)
        return grad_x, grad_alpha
