"""Steps replayed as CUDA graphs compute exactly what the eager steps compute.

``CUDAGraphStep``'s bookkeeping (warm-up, capture, static inputs and output, eager partial
batches, capturing again on a new learning rate) is tested on the CPU through a stand-in graph
that behaves as a CUDA graph does: recording runs nothing, each replay reruns the recorded work
on the static inputs into the same output tensor. The real capture is tested on a GPU.
"""
import copy

import pytest
import torch

from utils.train.cudagraphs import CUDAGraphStep
from utils.train.engine import evaluate, make_eval_step, make_step, train_one_epoch

from helpers import resnet

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


class StandInGraph:
    def __init__(self, fn, out):
        self.fn, self.out = fn, out

    def replay(self):
        self.out.copy_(self.fn())


class StandInGraphStep(CUDAGraphStep):
    """``CUDAGraphStep`` on the CPU. ``state()`` lists the tensors a step updates in place:
    recording leaves them as they were, since recorded kernels do not run."""

    def __init__(self, step, state, **kwargs):
        super().__init__(step, **kwargs)
        self.state, self.records, self.warmups = state, 0, 0

    def _record(self, fn):
        self.records += 1
        saved = [t.detach().clone() for t in self.state()]
        out = fn()
        with torch.no_grad():
            for t, s in zip(self.state(), saved):
                t.copy_(s)
        return StandInGraph(fn, out), out

    def _on_side_stream(self, x, y):
        self.warmups += 1
        return self.step(x, y)


def batches(n, batch, seed, device="cpu"):
    """n images in batches of ``batch``; the last one partial when batch does not divide n."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    return list(zip(x.to(device).split(batch), y.to(device).split(batch)))


def model_in(form):
    torch.manual_seed(0)
    model = resnet(depth=8)
    if form != "float":
        model.to_bits_(6)
    if form == "finetune":
        model.to_finetune_()
    return model


def train_both(form, decay, device, graph_step):
    """Three epochs (the third at a new lr) of an eager and a graphed copy of one model."""
    eager = model_in(form).to(device)
    graphed = copy.deepcopy(eager)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
            for m in (eager, graphed)]
    lrs = lambda: [g["lr"] for g in opts[1].param_groups]  # noqa: E731
    step = graph_step(make_step(graphed, opts[1], decay), graphed, opts[1], lrs)
    plain = make_step(eager, opts[0], decay)
    data = batches(6 * 16 + 5, 16, seed=1, device=device)  # 6 full batches and one of 5
    for epoch, lr in enumerate([0.1, 0.1, 0.01]):
        for opt in opts:
            opt.param_groups[0]["lr"] = lr
        assert train_one_epoch(eager, data, plain) == train_one_epoch(graphed, data, step), epoch
    for (name, p), q in zip(eager.state_dict().items(), graphed.state_dict().values()):
        assert torch.equal(p, q), name
    tests = batches(4 * 20, 20, seed=2, device=device)
    eval_step = graph_step(make_eval_step(graphed), graphed, None, lambda: None)
    assert evaluate(eager, tests) == evaluate(graphed, tests, step=eval_step)
    return step, eval_step


def stand_in(step, model, optimizer, key):
    def state():
        momenta = [s["momentum_buffer"] for s in optimizer.state.values()] if optimizer else []
        return [*model.parameters(), *model.buffers(), *momenta]

    return StandInGraphStep(step, state, key=key)


@pytest.mark.parametrize("form,decay", [("bits", 0.01), ("finetune", 0.0)])
def test_graph_bookkeeping_trains_exactly_like_eager(form, decay):
    step, eval_step = train_both(form, decay, "cpu", stand_in)
    # Epochs 1-2: 3 warm-ups, a capture; epoch 3 (new lr): captured again, no more warm-up.
    assert (step.warmups, step.records, step.captured_key) == (3, 2, [0.01])
    assert (eval_step.warmups, eval_step.records) == (3, 1)


def test_a_short_epoch_never_captures_its_partial_batch():
    model = model_in("bits")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = stand_in(make_step(model, opt, 0.01), model, opt, lambda: None)
    for _ in range(3):
        train_one_epoch(model, batches(2 * 8 + 3, 8, seed=4), step)
    assert step.records == 1 and step.x.shape[0] == 8


@cuda
@pytest.mark.parametrize("form,decay", [("bits", 0.01), ("finetune", 0.0), ("float", 0.0)])
def test_cuda_graph_replay_trains_exactly_like_eager(form, decay):
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        step, _ = train_both(form, decay, "cuda",
                             lambda fn, model, opt, key: CUDAGraphStep(fn, key=key))
    finally:
        torch.backends.cudnn.deterministic = False
    assert step.graph is not None and step.captured_key == [0.01]


class FailingCapture(StandInGraphStep):
    """A capture that fails, as one that meets a host sync or an uncapturable kernel would."""

    def _record(self, fn):
        self.records += 1
        raise RuntimeError("operation not permitted when stream is capturing")


def test_a_failed_capture_warns_once_and_trains_eagerly(capsys):
    eager, graphed = model_in("bits"), model_in("bits")
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (eager, graphed)]
    plain = make_step(eager, opts[0], 0.01)
    step = FailingCapture(make_step(graphed, opts[1], 0.01), lambda: [])
    data = batches(5 * 8, 8, seed=3)
    assert train_one_epoch(eager, data, plain) == train_one_epoch(graphed, data, step)
    assert step.records == 1 and step.eager  # tried once, then eager for good
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "CUDA graph capture failed" in lines[0]
    assert "--no-cuda-graphs" in lines[0]
    for (name, p), q in zip(eager.state_dict().items(), graphed.state_dict().values()):
        assert torch.equal(p, q), name
