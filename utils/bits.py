"""Bit planes of one quantized tensor: encoding, decoding, re-quantization and plane dropping.

A tensor ``x`` of shape ``S`` at precision ``N`` is held as two plane tensors ``p`` and ``n`` of
shape ``S + (N,)`` (plane 0 the most significant bit) and a scale of shape ``(1,)``:
``x = scale * Q_N(sum_i (p_i - n_i) e_i)`` with ``e_i = 2^(N-1-i) / (2^N - 1)``.

The integer view used throughout is the signed *code* ``c = sum_i (p_i - n_i) 2^(N-1-i)``, so that
``x = scale * c / (2^N - 1)`` whenever the bits are exactly 0 or 1. Everything here is tensor
math over the planes it is handed; the layers in ``models/`` decide which tensors those are.
"""
import functools

import torch

from .ste import levels

MAX_BITS = 8


@functools.lru_cache(maxsize=None)
def plane_weights(nbits, device="cpu"):
    """``e_i = 2^(N-1-i) / (2^N - 1)`` for i = 0..N-1, as a float32 tensor of shape (N,)."""
    powers = torch.tensor([2.0 ** (nbits - 1 - i) for i in range(nbits)], dtype=torch.float64)
    return (powers / levels(nbits)).to(device=device, dtype=torch.float32)


def plane_value(p, n):
    """``w = sum_i (p_i - n_i) e_i``: (..., N) planes -> (...) values in [-1, 1] for 0/1 bits."""
    return (p - n) @ plane_weights(p.shape[-1], p.device)


def decode(p, n):
    """The code ``sum_i (p_i - n_i) 2^(N-1-i)`` in float64 (exact integers for 0/1 bits)."""
    nbits = p.shape[-1]
    powers = torch.tensor([2.0 ** (nbits - 1 - i) for i in range(nbits)], dtype=torch.float64,
                          device=p.device)
    return (p.double() - n.double()) @ powers  # (...,)


def encode(code, nbits, dtype=torch.float32):
    """Signed integer code (...) with ``|code| < 2^N`` -> 0/1 planes ``p, n`` of shape (..., N).

    Positive codes put their binary digits into ``p``, negative ones into ``n``; the other tensor
    is zero there (BSQ_METHOD.md, "Float -> bits").
    """
    code = code.long()
    shifts = torch.arange(nbits - 1, -1, -1, device=code.device)  # (N,) MSB first
    digits = (code.abs().unsqueeze(-1) >> shifts) & 1  # (..., N)
    positive = (code > 0).unsqueeze(-1)
    return (digits * positive).to(dtype), (digits * ~positive).to(dtype)


def quantize(x, nbits):
    """Float -> code at N bits with ``S = max|x|``: ``code = sign(x) round(|x| (2^N - 1) / S)``.

    Returns ``(code, S)``: int64 of x's shape, and a (1,) tensor. An all-zero tensor gives a zero
    code and ``S = 0``. ``S * code / (2^N - 1)`` is the N-bit symmetric uniform quantization of x.
    """
    s = x.detach().abs().amax().reshape(1)
    safe = s.clamp_min(torch.finfo(x.dtype).tiny)
    code = torch.round(x.detach().abs() * levels(nbits) / safe) * torch.sign(x.detach())
    return code.long(), s.to(x.dtype)


def requantize(p, n, scale, nbits, thre=0.0):
    """Steps 1 and 2 of BSQ_METHOD.md "Re-quantization and precision adjustment".

    1. Round the continuous planes to the code ``round(w (2^N - 1))``; if a magnitude exceeds
       ``2^N - 1`` the precision grows (up to 8 bits, keeping every weight), at 8 bits it clips.
    2. Drop planes: from the MSB, all-zero planes go, and planes with fewer than ``thre`` percent
       nonzeros go after being OR-ed into every lower plane; then from the LSB, planes with at
       most ``thre`` percent nonzeros go, each doubling the step.

    Returns ``(p, n, scale, nbits)`` with exact 0/1 planes. The scale is updated once, in float64:
    ``scale * 2^k (2^N_new - 1) / (2^N_old - 1)`` for k dropped LSBs, so every weight keeps its
    value up to one fp32 rounding of the scale (exactly, for the integer codes). A layer whose
    code is all zero ends at precision 0 with one zero plane (the release's "precision 0").
    Precision 0 in is returned unchanged: a zeroed layer stays zero.
    """
    if nbits == 0:
        return p, n, scale, nbits
    code = torch.round(decode(p, n)).long()  # (...,) step 1
    mag, sign = code.abs(), torch.sign(code)
    top = int(mag.max())
    new_bits = min(MAX_BITS, max(nbits, top.bit_length()))
    mag = mag.clamp_(max=levels(new_bits))

    total, shift, bits = mag.numel(), 0, new_bits
    while bits > 1:  # step 2, from the MSB
        msb = mag >> (bits - 1)
        count = int(msb.count_nonzero())
        if count == 0:
            bits -= 1
        elif count * 100 < thre * total:
            mag = torch.where(msb.bool(), levels(bits - 1), mag)
            bits -= 1
        else:
            break
    while bits > 1:  # step 2, from the LSB
        if int((mag & 1).count_nonzero()) * 100 <= thre * total:
            mag = mag >> 1
            shift += 1
            bits -= 1
        else:
            break

    factor = 2.0 ** shift * levels(bits) / levels(nbits)
    new_scale = (scale.double() * factor).to(scale.dtype)
    if not bool(mag.any()):
        bits = 0
    new_p, new_n = encode(mag * sign, max(bits, 1), dtype=p.dtype)
    return new_p, new_n, new_scale, bits


@torch.no_grad()
def clamp_(tensors, lo, hi):
    """In-place clamp of a list of tensors to [lo, hi] with fused multi-tensor kernels."""
    if tensors:
        torch._foreach_clamp_min_(tensors, lo)
        torch._foreach_clamp_max_(tensors, hi)
