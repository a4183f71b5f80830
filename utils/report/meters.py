"""How a batch's loss and accuracy are counted, as the release counts them: the training and test
steps' meters (``utils/train/engine.py``) and the ONNX graph's check (``models/onnx.py``)."""
import torch


def meters(ce, logits, y):
    """The release's running meters of one batch of n: ``[CE * n, top-1 * n]`` in float64.

    As the release computes them: ``CE`` the batch's mean cross-entropy and ``top-1`` its
    accuracy in percent, ``correct * (100 / n)`` in fp32, each weighted by n in float64, so that
    their sums over an epoch divided by its sample count are the release's figures bit for bit.
    Top-1 is the first index of ``topk``, as the release counts it. Returns a (2,) tensor.
    """
    n = y.numel()
    pred = logits.topk(1, 1, True, True)[1].t()  # (1, n)
    top1 = pred.eq(y.view(1, -1)).reshape(-1).float().sum(0).mul(100.0 / n)
    return torch.stack([ce.double() * n, top1.double() * n])


TOP_K = 5


def top_k(logits, y, k=TOP_K):
    """``top-k * n`` of one batch of n in float64: the percentage of samples whose class is among
    the ``k`` largest logits (all of them when there are fewer classes), in the release's
    arithmetic of top-1, ``correct * (100 / n)`` in fp32. Returns a (1,) tensor."""
    n = y.numel()
    pred = logits.topk(min(k, logits.shape[1]), 1, True, True)[1]  # (n, k)
    hits = pred.eq(y.view(-1, 1)).any(1).float().sum(0).mul(100.0 / n)
    return hits.double().mul(n).reshape(1)
