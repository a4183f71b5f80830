"""BSQ to a budget: the plane operations keep the weights they should, the dry run changes
nothing, --allowed-bits rounds precisions up, meet_ drops the sparsest planes until the budget
holds, and the controller moves alpha toward the reference."""
import argparse

import pytest
import torch

import cifar_prune_STE
from utils.errors import BSQError
from utils.quant.bits import encode, plane_value, quantize, step_down, widen
from utils.quant.ste import levels
from utils.train import target
from utils.train.target import AlphaController, Budget, reach_step

from helpers import mixed_model, resnet


def planes(nbits, seed=0):
    torch.manual_seed(seed)
    code, scale = quantize(torch.randn(500), nbits)
    return (*encode(code, nbits), scale, nbits), code


def weights(p, n, scale, nbits):
    return scale * plane_value(p, n)


def test_widen_keeps_every_weight_and_step_down_only_what_it_drops():
    (p, n, scale, nbits), code = planes(6)
    before = weights(p, n, scale, nbits)
    wide = widen(p, n, scale, nbits, 8)
    assert wide[3] == 8 and wide[0].shape[-1] == 8
    assert torch.allclose(weights(*wide), before, atol=1e-6)
    lsb = step_down(p, n, scale, nbits, msb=False)
    assert lsb[3] == 5
    assert (weights(*lsb) - before).abs().max() <= scale / levels(6) + 1e-6  # half an LSB of 5
    msb = step_down(p, n, scale, nbits, msb=True)
    changed = (weights(*msb) - before).abs() > 1e-5
    assert torch.equal(changed, code.abs() > levels(5))  # only the saturated weights move


def test_the_dry_run_is_the_requantization_and_changes_nothing():
    model = mixed_model(continuous=True)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    dry = model.requantized_scheme(0.0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    model.requantize_(0.0)
    assert dry == model.scheme()


def test_allowed_bits_round_every_precision_up_and_keep_the_weights():
    model, plain = mixed_model(continuous=True), mixed_model(continuous=True)
    model.allowed_bits = (4, 8)
    assert model.requantized_scheme(0.0) == {
        k: [0 if n == 0 else 4 if n <= 4 else 8 for n in v]
        for k, v in plain.requantized_scheme(0.0).items()}
    model.requantize_(0.0)
    plain.requantize_(0.0)
    assert {n for v in model.scheme().values() for n in v} <= {0, 4, 8}
    for (_, a), (_, b) in zip(model.quant_layers(), plain.quant_layers()):
        for slot in a.slots:
            assert torch.allclose(a.quantized(slot), b.quantized(slot), atol=1e-6)


def test_meet_drops_the_sparsest_planes_until_the_budget_holds():
    model = resnet(depth=8).to_bits_(6)
    layer = dict(model.quant_layers())["layer2.0.conv2"]
    with torch.no_grad():
        layer.pweight[..., -1] = 0  # an empty LSB plane: the cheapest of all to drop
        layer.nweight[..., -1] = 0
    total, bits = model.size()
    limit = (bits - layer.sizes()[0][0] + 1) / total  # one plane less than now
    dropped = model.meet_(lambda m: m.avg_bits() > limit)
    assert dropped == 1 and model.scheme()["layer2.0.conv2"][0] == 5
    assert model.avg_bits() <= limit
    assert model.meet_(lambda m: m.avg_bits() > 0.5) > 0  # as far as it can go: 1 bit each
    assert {n for n, _ in model.scheme().values()} == {1}


def test_meet_steps_down_to_the_next_allowed_precision():
    model = resnet(depth=8).to_bits_(8)
    model.allowed_bits = (2, 4, 8)
    model.meet_(lambda m: m.avg_bits() > 7.5)
    widths = {n for n, _ in model.scheme().values()}
    assert widths <= {2, 4, 8} and widths != {8} and model.avg_bits() <= 7.5


def flags(**given):
    values = {"target_bits": None, "target_compression": None, "target_bops": None,
              "decay": None, "L1": True}
    return argparse.Namespace(**{**values, **given})


def test_budgets_and_their_refusals():
    assert Budget.from_args(flags()) is None
    assert Budget.from_args(flags(target_compression=16)) == Budget("bits", 2.0,
                                                                    "--target-compression 16")
    assert Budget.from_args(flags(target_bops=1.5)).target == 1.5e9
    with pytest.raises(BSQError, match="--target-bits and --target-bops"):
        Budget.from_args(flags(target_bits=3, target_bops=1))
    with pytest.raises(BSQError, match="drop --decay 0.01"):
        Budget.from_args(flags(target_bits=3, decay=0.01))
    with pytest.raises(BSQError, match="add --L1"):
        Budget.from_args(flags(target_bits=3, L1=False))
    model = resnet(depth=8).to_bits_(4)
    with pytest.raises(BSQError, match=r"not below the starting model's size \(4.000 bits"):
        Budget("bits", 5.0, "--target-bits 5").check_start(model)
    Budget("bits", 3.0, "--target-bits 3").check_start(model)
    parse = cifar_prune_STE.get_args_parser().parse_args
    with pytest.raises(SystemExit):
        parse(["--allowed-bits"])  # an empty set


def controller(sizes, target=2.0, reach=600, end=900, epoch=100):
    """A controller whose dry run reads ``sizes(t)`` at the update's step ``t``."""
    step = {"t": 0}
    c = AlphaController(Budget("bits", target, "t"), None, 8.0, reach=reach, end=end,
                        epoch=epoch, measure=lambda: sizes(step["t"]))

    def update(t):
        step["t"] = t
        c.update(t)
    return c, update


def test_the_reference_falls_to_the_target_by_the_last_requantization():
    assert reach_step(9, 3, 100) == 600 and reach_step(9, 0, 100) == 900
    c, _ = controller(lambda t: 8.0)
    assert c.reference(0) == 8.0 and c.reference(300) == pytest.approx(4.0)
    assert c.reference(600) == c.reference(900) == pytest.approx(2.0)


def test_alpha_grows_at_most_SEARCH_per_epoch_until_the_size_moves_then_GROW():
    c, update = controller(lambda t: 8.0 if t < 120 else 7.9)  # falls once, then stands
    update(1)  # not an update step
    assert c.history == [] and c.value() == pytest.approx(target.ALPHA0)
    for t in range(0, 300, target.EVERY):
        update(t)
    alpha = {t: a for t, a, _ in c.history}
    assert all(alpha[t + target.EVERY] > alpha[t] for t in range(0, 260, target.EVERY))
    assert alpha[100] / alpha[0] == pytest.approx(target.SEARCH, rel=1e-5)  # an epoch: 100 steps
    assert alpha[220] / alpha[120] == pytest.approx(target.GROW, rel=1e-5)


def test_alpha_does_not_grow_while_the_size_falls_fast_enough_to_reach_the_reference():
    # Above the reference, but falling four times as fast (in log) as it does: the first rule,
    # which read only the gap, grew alpha here, and wound it up while the size lagged.
    c, update = controller(lambda t: 12.0 * 0.25 ** (4 * t / 1800), reach=1800, end=2700)
    for t in range(0, 180, target.EVERY):
        update(t)
    assert all(size > c.reference(t) for t, _, size in c.history)
    known = [a for t, a, _ in c.history if t >= 100]  # after an epoch of updates: its rate
    assert all(b < a for a, b in zip(known, known[1:]))


def test_alpha_shrinks_at_most_SHRINK_per_epoch_below_the_reference():
    c, update = controller(lambda t: 1.0)  # below the target from the start
    for t in range(0, 200, target.EVERY):
        update(t)
    alphas = [a for _, a, _ in c.history]
    per_epoch = 100 // target.EVERY
    assert alphas[per_epoch] / alphas[0] == pytest.approx(1 / target.SHRINK, rel=1e-5)
    state = c.state_dict()
    again, _ = controller(lambda t: 8.0)
    again.load_state_dict(state)
    assert again.value() == pytest.approx(c.value()) and again.history == c.history
