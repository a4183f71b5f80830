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

from utils.quant.corrections import CORRECTED
from utils.quant.ste import SMALLEST_POSITIVE, levels

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
    is zero there (docs/method.md, "Float -> bits"). The digits are taken in uint8 (``N <=
    MAX_BITS = 8``), 2.6x faster than in int64 on the CPU (11M codes at 8 bits).
    """
    assert nbits <= MAX_BITS, nbits
    shifts = torch.arange(nbits - 1, -1, -1, device=code.device, dtype=torch.uint8)  # MSB first
    digits = (code.abs().to(torch.uint8).unsqueeze(-1) >> shifts) & 1  # (..., N) uint8
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


def requantize(p, n, scale, nbits, thre=0.0, corrections=CORRECTED, bias=False):
    """Steps 1 and 2 of docs/method.md, "Re-quantization and precision adjustment".

    1. Round the continuous planes to the code ``round(w (2^N - 1))``; if a magnitude exceeds
       ``2^N - 1`` the tensor grows one bit (below 8 bits, keeping every weight); at 8 bits it
       clips.
    2. Drop planes with threshold ``thre`` (percent): the release's way (``drop_planes``), or,
       with ``corrections.thre_order``, the method's (``_drop_code_planes``). The two agree at
       ``thre = 0``.

    Returns ``(p, n, scale, nbits)`` with exact 0/1 planes. The scale follows the release's chain
    of fp32 operations: ``* (2^N - 1) / (2^(N-1) - 1)`` on growth, then step 2's. A tensor whose
    code is all zero keeps one zero plane at precision 1, as in the release, or, with
    ``corrections.zero_precision``, goes to precision 0; precision 0 in is returned unchanged,
    so a zeroed tensor stays zero. ``bias`` marks the classifier bias (see ``drop_planes``).
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
    if corrections.thre_order:
        mag, scale, nbits = _drop_code_planes(mag, scale, nbits, thre)
        p, n = encode(mag * sign, nbits, dtype=p.dtype)
    else:
        p, n = encode(mag * sign, nbits, dtype=p.dtype)
        p, n, scale, nbits = drop_planes(p, n, scale, nbits, thre, bias)
    if corrections.zero_precision and not bool(p.any() or n.any()):
        nbits = 0
    return p, n, scale, nbits


def _drop_code_planes(mag, scale, nbits, thre):
    """Step 2 as the method states it, on magnitudes ``mag`` (int64, < 2^N) of ``nbits`` bits.

    From the MSB, while N > 1: an all-zero plane goes; a plane with fewer than ``thre`` percent
    nonzeros is OR-ed into every lower plane (those weights saturate) and goes. Then from the LSB,
    while N > 1: a plane with at most ``thre`` percent nonzeros goes, doubling the scale.
    Finally ``scale * (2^N - 1) / (2^N0 - 1)``. Returns ``(mag, scale, nbits)``.
    """
    if nbits <= 1:
        return mag, scale, nbits
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
    return mag, scale * levels(nbits) / levels(start), nbits


def drop_planes(p, n, scale, nbits, thre=0.0, bias=False):
    """The release's plane dropping on (..., N) planes ``p, n``, exact or continuous.

    The shares of nonzero ``p_i - n_i`` (percent) are counted once, before the scan. From the
    MSB: a plane with share 0 goes; a plane with share below ``thre`` goes after being added to
    every lower plane, which then saturate at 1; any other plane stops the scan; at 1 bit it
    stops. Each drop slices the planes as they were before the scan, so when two MSB planes in a
    row go, the first one's addition is lost; and a weight tensor that reaches 1 bit so skips the
    saturation (the bias saturates first). Then from the LSB, with shares counted again: a plane
    with share at most ``thre`` goes and the scale doubles, down to 1 bit. Finally, as step 2 of
    docs/method.md: ``scale * (2^N - 1) / (2^N0 - 1)``. Never below 1 bit; with ``thre = 0``
    this is step 2 of the method exactly. Returns ``(p, n, scale, nbits)``.
    """
    if nbits <= 1:
        return p, n, scale, nbits
    start, before = nbits, (p, n)
    for i, share in enumerate(_plane_shares(p, n)):  # from the MSB
        if share == 0:
            p, n = (t[..., i + 1:] for t in before)
            nbits -= 1
        elif share < thre:
            p, n = (t[..., i + 1:] + t[..., i:i + 1] for t in before)
            nbits -= 1
            if nbits > 1 or bias:
                p, n = p.clamp(max=1.0), n.clamp(max=1.0)
        else:
            break
        if nbits == 1:
            break
    before, shares = (p, n), _plane_shares(p, n)
    for i in range(len(shares)):  # from the LSB
        if nbits == 1 or shares[-1 - i] > thre:
            break
        p, n = (t[..., :nbits - 1] for t in before)
        scale = scale * 2
        nbits -= 1
    return p, n, scale * levels(nbits) / levels(start), nbits


def _plane_shares(p, n):
    """Percentage of nonzero ``p_i - n_i`` in each plane i of (..., N) planes, MSB first."""
    diff = (p - n).reshape(-1, p.shape[-1])  # (elements, N)
    return [int(c) * 100 / diff.shape[0] for c in diff.count_nonzero(0).tolist()]


@torch.no_grad()
def clamp_(tensors, lo, hi):
    """In-place clamp of a list of tensors to [lo, hi] with fused multi-tensor kernels."""
    if tensors:
        torch._foreach_clamp_min_(tensors, lo)
        torch._foreach_clamp_max_(tensors, hi)


def step_down(p, n, scale, nbits, msb):
    """One plane fewer, ``N -> N - 1``, on exact 0/1 planes (a budget that a re-quantization left
    unmet, ``BitModel.meet_``): the MSB plane goes with every larger magnitude saturating at
    ``2^(N-1) - 1``, or the LSB plane goes with each code halved, rounded half away from zero.
    The scale follows so that every other weight keeps its value:
    ``scale * (2^(N-1) - 1) / (2^N - 1)``, times 2 for the LSB. Returns ``(p, n, scale, N - 1)``."""
    code = torch.round(plane_value(p, n) * levels(nbits)).long()  # (...,)
    mag, sign = code.abs(), torch.sign(code)
    mag = (mag if msb else (mag + 1) >> 1).clamp(max=levels(nbits - 1))
    scale = scale * (1 if msb else 2) * levels(nbits - 1) / levels(nbits)
    return (*encode(mag * sign, nbits - 1, dtype=p.dtype), scale, nbits - 1)


def widen(p, n, scale, nbits, to):
    """``to - N`` zero planes above the MSB (``--allowed-bits``): the same code and weights at
    precision ``to``, the scale times ``(2^to - 1) / (2^N - 1)``. Returns ``(p, n, scale, to)``."""
    zeros = p.new_zeros((*p.shape[:-1], to - nbits))
    return (torch.cat([zeros, p], -1), torch.cat([zeros, n], -1),
            scale * levels(to) / levels(nbits), to)


def allowed_width(nbits, allowed):
    """The least width of ``allowed`` (a sorted tuple) at or above ``nbits``; ``nbits`` itself
    without a set, or at 0 (an empty tensor)."""
    if not allowed or nbits == 0:
        return nbits
    return next((a for a in allowed if a >= nbits), allowed[-1])
