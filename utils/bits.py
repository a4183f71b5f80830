"""Bit planes of one quantized tensor: encoding, re-quantization and plane dropping.

A tensor ``x`` of shape ``S`` at precision ``N`` is held as two plane tensors ``p`` and ``n`` of
shape ``S + (N,)`` (plane 0 the most significant bit) and a 0-dim scale:
``x = scale * Q_N(sum_i (p_i - n_i) e_i)`` with ``e_i = 2^(N-1-i) / (2^N - 1)``
(docs/method.md, "Bit representation").

The integer view used throughout is the signed *code* ``c = sum_i (p_i - n_i) 2^(N-1-i)``, so that
``x = scale * c / (2^N - 1)`` whenever the bits are exactly 0 or 1. Every fp32 operation here is
the original release's, in its order (docs/method.md, "Operation order"). Everything is tensor
math over the planes it is handed; the layers in ``models/`` decide which tensors those are.
"""
import functools

import torch

from .ste import SMALLEST_POSITIVE, levels

MAX_BITS = 8  # the highest precision of a quantized tensor
FLOAT_BITS = 32  # the bits of an unquantized weight in the size accounting


@functools.lru_cache(maxsize=None)
def plane_weights(nbits, device="cpu"):
    """``e_i = 2^(N-1-i) / (2^N - 1)``, i = 0..N-1: computed in float64, held as float32 (N,)."""
    powers = torch.tensor([2.0 ** (nbits - 1 - i) for i in range(nbits)], dtype=torch.float64)
    return (powers / levels(nbits)).to(device=device, dtype=torch.float32)


def plane_value(p, n):
    """``w = sum_i (p_i - n_i) e_i``: (..., N) planes -> (...) values in [-1, 1] for 0/1 bits.

    The release's order: the products ``(p_i - n_i) e_i`` first, then one sum over the planes.
    (A matrix-vector product gives other fp32 roundings, also for exact 0/1 bits.)
    """
    return ((p - n) * plane_weights(p.shape[-1], p.device)).sum(-1)


def encode(code, nbits, dtype=torch.float32):
    """Signed integer code (...) with ``|code| < 2^N`` -> 0/1 planes ``p, n`` of shape (..., N).

    Positive codes put their binary digits into ``p``, negative ones into ``n``; the other tensor
    is zero there (docs/method.md, "Float -> bits").
    """
    code = code.long()
    shifts = torch.arange(nbits - 1, -1, -1, device=code.device)  # (N,) MSB first
    digits = (code.abs().unsqueeze(-1) >> shifts) & 1  # (..., N)
    positive = (code > 0).unsqueeze(-1)
    return (digits * positive).to(dtype), (digits * ~positive).to(dtype)


def quantize(x, nbits):
    """Float -> code at N bits with ``S = max|x|``: ``code = sign(x) round(|x| (2^N - 1) / S)``.

    Returns ``(code, S)``: int64 of x's shape, and a 0-dim tensor. An all-zero tensor gives a zero
    code and ``S = 0``. ``S * code / (2^N - 1)`` is the N-bit symmetric uniform quantization of x.
    """
    x = x.detach()
    s = x.abs().amax()  # ()
    code = torch.round(x.abs() * levels(nbits) / s.clamp_min(SMALLEST_POSITIVE)) * torch.sign(x)
    return code.long(), s


def requantize(p, n, scale, nbits, thre=0.0):
    """Steps 1 and 2 of docs/method.md, "Re-quantization and precision adjustment".

    1. Round the continuous planes to the code ``round(w (2^N - 1))``; if a magnitude exceeds
       ``2^N - 1`` the layer grows one bit (below 8 bits, keeping every weight); at 8 bits it
       clips.
    2. Drop planes: from the MSB, all-zero planes go, and planes with fewer than ``thre`` percent
       nonzeros go after being OR-ed into every lower plane; then from the LSB, planes with at
       most ``thre`` percent nonzeros go, each doubling the step.

    Returns ``(p, n, scale, nbits)`` with exact 0/1 planes. The scale follows the release's chain
    of fp32 operations: ``* (2^N - 1) / (2^(N-1) - 1)`` on growth, ``* 2`` per dropped LSB, and
    ``* (2^N - 1) / (2^N0 - 1)`` at the end of step 2 (N0 the precision it started from, so this
    also runs when nothing was dropped). A layer whose code is all zero ends at precision 0 with
    one zero plane; precision 0 in is returned unchanged, so a zeroed layer stays zero.
    """
    if nbits == 0:
        return p, n, scale, nbits
    code = torch.round(plane_value(p, n) * levels(nbits)).long()  # (...,) step 1
    mag, sign = code.abs(), torch.sign(code)
    scale = scale.detach()
    if nbits >= MAX_BITS:
        mag = mag.clamp(max=levels(nbits))
    elif int(mag.max()) > levels(nbits):
        nbits += 1
        scale = scale * levels(nbits) / levels(nbits - 1)
        mag = mag.clamp(max=levels(nbits))  # bits in [0, 2] never need more than one new bit

    if nbits > 1:  # step 2
        total, start = mag.numel(), nbits
        while nbits > 1:  # from the MSB
            msb = mag >> (nbits - 1)
            share = int(msb.count_nonzero()) * 100 / total
            if share == 0:
                nbits -= 1
            elif share < thre:
                mag = torch.where(msb.bool(), levels(nbits - 1), mag)
                nbits -= 1
            else:
                break
        while nbits > 1:  # from the LSB
            if int((mag & 1).count_nonzero()) * 100 / total > thre:
                break
            mag = mag >> 1
            scale = scale * 2
            nbits -= 1
        scale = scale * levels(nbits) / levels(start)
    if not bool(mag.any()):
        nbits = 0
    new_p, new_n = encode(mag * sign, max(nbits, 1), dtype=p.dtype)
    return new_p, new_n, scale, nbits


@torch.no_grad()
def clamp_(tensors, lo, hi):
    """In-place clamp of a list of tensors to [lo, hi] with fused multi-tensor kernels."""
    if tensors:
        torch._foreach_clamp_min_(tensors, lo)
        torch._foreach_clamp_max_(tensors, hi)
