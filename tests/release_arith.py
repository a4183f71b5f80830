"""The original release's arithmetic, restated operation by operation, for the fidelity tests.

Written from docs/method.md ("Operation order") as a reference independent of the library: the
library must equal it bit for bit. Names follow the release's state dicts without ``module.``.
"""
import torch
import torch.nn.functional as F


def plane_weights(nbits):
    """``2^(N-1-i) / (2^N - 1)`` computed in float64, held as float32 (the release's ``exps``)."""
    powers = torch.tensor([2 ** (nbits - 1 - i) for i in range(nbits)], dtype=torch.float64)
    return (powers / (2 ** nbits - 1)).float()


def plane_sum(p, n):
    """``sum over the last axis of (p - n) * e``."""
    return torch.sum(torch.mul(p - n, plane_weights(p.shape[-1])), dim=-1)


class WeightSTE(torch.autograd.Function):
    """Clip to [-1, 1], ``round(|w| k) / k``, times ``sign(w)``; gradient straight through."""

    @staticmethod
    def forward(ctx, w, nbits):
        w = torch.where(w > 1, torch.full_like(w, 1), w)
        w = torch.where(w < -1, torch.full_like(w, -1), w)
        step = 2 ** nbits - 1
        return torch.round(torch.abs(w) * step) / step * torch.sign(w)

    @staticmethod
    def backward(ctx, g):
        return g, None


class ActSTE(torch.autograd.Function):
    """``S = max|x|``; ``x * 0`` if S is 0, else ``S * (round(|x| k / S) / k) * sign(x)``."""

    @staticmethod
    def forward(ctx, x, nbits):
        s = torch.max(torch.abs(x))
        if s == 0:
            return x * 0
        step = 2 ** nbits - 1
        r = torch.round(torch.abs(x) * step / s) / step
        return s * r * torch.sign(x)

    @staticmethod
    def backward(ctx, g):
        return g, None


def act_quant(x, nbits):
    return ActSTE.apply(x, nbits)


def bit_lasso(groups):
    """``B``: per tensor ``sum(sqrt(1e-8 + sum(cat((p, n), 0)^2 over all axes but the last)))
    * (#weights * N)``, accumulated tensor after tensor from 0."""
    reg = 0.0
    for p, n, nbits in groups:
        param = torch.cat((p, n), 0)
        squares = torch.sum(param ** 2, tuple(range(param.dim() - 1)))
        reg = reg + torch.sum(torch.sqrt(1e-8 + squares)) * (p[..., 0].numel() * nbits)
    return reg


def requantize(p, n, scale, nbits, thre, bias=False):
    """Re-quantization then plane dropping on plane tensors; the precision stays at least 1.

    Dropping a sparse MSB plane saturates the lower planes, except that a weight tensor (not the
    classifier's bias: ``bias``) reaching 1 bit stops before its saturation."""
    w = plane_sum(p, n)
    step = 2 ** nbits - 1
    rp = torch.round(torch.where(w > 0, w, torch.zeros_like(w)) * step)
    rn = torch.round(torch.where(w <= 0, -w, torch.zeros_like(w)) * step)
    if nbits >= 8:
        rp, rn = rp.clamp(max=step), rn.clamp(max=step)
    elif torch.max(torch.cat((rp, rn))) > step:
        nbits += 1
        scale = scale * (2 ** nbits - 1) / (2 ** (nbits - 1) - 1)
    p, n = torch.zeros(w.shape + (nbits,)), torch.zeros(w.shape + (nbits,))
    for i in range(nbits):
        ex = 2 ** (nbits - i - 1)
        p[..., i], n[..., i] = torch.floor(rp / ex), torch.floor(rn / ex)
        rp, rn = rp - torch.floor(rp / ex) * ex, rn - torch.floor(rn / ex) * ex
    return prune(p, n, scale, nbits, thre, bias)


def prune(p, n, scale, nbits, thre, bias=False):
    """The release's plane dropping on (..., N) planes, exact or continuous (see requantize)."""
    if nbits == 1:
        return p, n, scale, nbits

    def shares(p, n):
        return [int(torch.count_nonzero((p - n)[..., i])) * 100 / p[..., 0].numel()
                for i in range(p.shape[-1])]

    start, nonzero, p0, n0 = nbits, shares(p, n), p, n
    for i in range(start):  # from the MSB, slicing the planes as they were
        if nonzero[i] == 0:
            p, n = p0[..., i + 1:], n0[..., i + 1:]
            nbits -= 1
            if nbits == 1:
                break
        elif nonzero[i] < thre:
            p, n = p0[..., i + 1:] + p0[..., i:i + 1], n0[..., i + 1:] + n0[..., i:i + 1]
            if bias:
                p = torch.where(p < 1, p, torch.full_like(p, 1.0))
                n = torch.where(n < 1, n, torch.full_like(n, 1.0))
            nbits -= 1
            if nbits == 1:
                break
            if not bias:
                p = torch.where(p < 1, p, torch.full_like(p, 1.0))
                n = torch.where(n < 1, n, torch.full_like(n, 1.0))
        else:
            break
    nonzero, top = shares(p, n), nbits
    for i in range(top if nbits > 1 else 0):  # from the LSB
        if nonzero[top - 1 - i] > thre:
            break
        p, n, nbits, scale = p[..., :top - 1 - i], n[..., :top - 1 - i], nbits - 1, scale * 2
        if nbits == 1:
            break
    return p, n, scale * (2 ** nbits - 1) / (2 ** start - 1), nbits


def resnet_forward(t, scheme, x, depth, act=4):
    """The CIFAR ResNet on the tensors ``t`` (name -> tensor) of a bits-form state, train mode.

    BatchNorm running statistics in ``t`` are updated in place, as ``nn.BatchNorm2d`` does.
    """
    def weight(name, slot="weight", planes=("pweight", "nweight", "scale")):
        p, n, s = (t[f"{name}.{k}"] for k in planes)
        return WeightSTE.apply(plane_sum(p, n), scheme[name][0 if slot == "weight" else 1]) * s

    def bn(name, x):
        return F.batch_norm(x, t[f"{name}.running_mean"], t[f"{name}.running_var"],
                            t[f"{name}.weight"], t[f"{name}.bias"], True, 0.1, 1e-5)

    x = F.relu(bn("bn1", F.conv2d(x, weight("conv1"), None, 1, 1)))
    for s, stage in enumerate(("layer1", "layer2", "layer3")):
        for b in range((depth - 2) // 6):
            pre, stride = f"{stage}.{b}", 2 if s > 0 and b == 0 else 1
            out = F.conv2d(x, weight(f"{pre}.conv1"), None, stride, 1)
            out = act_quant(F.relu6(bn(f"{pre}.bn1", out)), act)
            out = bn(f"{pre}.bn2", F.conv2d(out, weight(f"{pre}.conv2"), None, 1, 1))
            if f"{pre}.downsample.0.weight" in t:
                x = bn(f"{pre}.downsample.1", F.conv2d(x, t[f"{pre}.downsample.0.weight"], None,
                                                       stride))
            x = act_quant(F.relu6(out + x), act)
    x = F.avg_pool2d(x, 8).view(x.size(0), -1)
    bias = weight("fc", "bias", ("pbias", "nbias", "biasscale"))
    return F.linear(x, weight("fc"), bias)
