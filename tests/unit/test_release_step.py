"""Three BSQ training steps through our step equal the release's arithmetic, restated literally.

The reference (``release_arith``) sums planes, quantizes weights and activations, builds the
regularizer and adds it in the release's operation order; SGD with momentum and weight decay;
then clamps to [0, 2] what the release clamps: every parameter named without ``scale`` or
``bn`` (with ``--corrected``: the bit tensors only). The release's SGD loops over the tensors one
by one; ours uses the multi-tensor kernels, which must give the same numbers.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

from utils.quant.corrections import CORRECTED, RELEASE
from utils.train.engine import make_optimizer, make_step

import release_arith as release
from helpers import resnet

DEPTH, LR, DECAY, MOMENTUM, WD = 8, 0.1, 0.05, 0.9, 1e-4


def start_model(corrections):
    """An 8-bit ResNet-8 whose planes are continuous, as mid-way through BSQ."""
    torch.manual_seed(0)
    model = resnet(depth=DEPTH, corrections=corrections).to_bits_(8)
    with torch.no_grad():
        for _, m in model.quant_layers():
            for p, n, _ in m.bit_groups():
                p.add_(torch.rand_like(p) * 0.2), n.add_(torch.rand_like(n) * 0.2)
    return model


@pytest.mark.parametrize("corrections", [RELEASE, CORRECTED], ids=["release", "corrected"])
def test_three_bsq_steps_equal_the_release_arithmetic(corrections):
    ours = start_model(corrections).train()
    state = {k: v.clone() for k, v in copy.deepcopy(ours).state_dict().items()}
    names = [name for name, _ in ours.named_parameters()]
    params = [state[name].requires_grad_() for name in names]
    scheme, total_params = ours.scheme(), ours.size()[0]
    groups = [(state[f"{layer}.{p}"], state[f"{layer}.{n}"], scheme[layer][i])
              for layer in scheme for i, (p, n) in enumerate([("pweight", "nweight"),
                                                              ("pbias", "nbias")])
              if f"{layer}.{p}" in state]
    if corrections.clamp:
        clamped = [t for p, n, _ in groups for t in (p, n)]
    else:
        clamped = [state[k] for k in names if "scale" not in k and "bn" not in k]
    reference = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WD, foreach=False)
    step = make_step(ours, make_optimizer(ours, LR, MOMENTUM, WD), DECAY)
    g = torch.Generator().manual_seed(1)
    for i in range(3):
        x, y = torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)
        stats = step(x, y)

        ce = F.cross_entropy(release.resnet_forward(state, scheme, x, DEPTH), y)
        reg = release.bit_lasso(groups)
        loss = ce + DECAY * reg / total_params
        reference.zero_grad()
        loss.backward()
        reference.step()
        with torch.no_grad():
            for t in clamped:
                t.copy_(torch.where(t > 2, torch.full_like(t, 2), t))
                t.copy_(torch.where(t < 0, torch.full_like(t, 0), t))

        assert stats[0] == ce.item() * len(y), i  # the same loss, bit for bit, as logged
        assert stats[2] == reg.item() / total_params, i
        for key, value in ours.state_dict().items():
            if not key.endswith("num_batches_tracked"):
                assert torch.equal(value, state[key]), (i, key)
