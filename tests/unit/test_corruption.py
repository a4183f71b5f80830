"""Corrupted checkpoints (truncated, flipped bytes, fields of the wrong type) end in the clean
CheckpointError or load as valid data: never another exception, never a hang."""
import functools
import io
import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import load_model_state
from utils.store.checkpoint import CheckpointError, checkpoint_state, load_checkpoint
from utils.train.fit import restore_training_state
from utils.train.rng import rng_state

from helpers import resnet


@functools.lru_cache(maxsize=None)
def good():
    """A checkpoint after one real step (momentum included), as a dict and as file bytes."""
    torch.manual_seed(0)
    model = resnet(depth=8).to_bits_(4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    ckpt = checkpoint_state(model, epoch=3, acc=50.0, best_acc=51.0, optimizer=optimizer,
                            rng=rng_state())
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return ckpt, buffer.getvalue()


def use_like_a_resumed_run(path):
    """Everything --resume does with a file: read it, rebuild the model, restore the rest."""
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt.get("epoch") or 0, int)  # what fit() counts from and compares with
    assert math.isfinite(ckpt.get("best_acc") or 0.0)
    model = load_model_state(resnet(depth=8), ckpt, path)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rng = torch.get_rng_state()
    try:
        restore_training_state(optimizer, ckpt)
    finally:
        torch.set_rng_state(rng)


def outcome(tmp_path, data):
    path = tmp_path / "ckpt.pth.tar"
    path.write_bytes(data)
    try:
        use_like_a_resumed_run(path)
    except CheckpointError as e:
        assert "\n" not in str(e)
        return "refused"
    return "loaded"


SETTINGS = settings(max_examples=60, deadline=10_000,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_the_good_checkpoint_loads(tmp_path):
    assert outcome(tmp_path, good()[1]) == "loaded"


FRACTION = st.floats(0, 1, exclude_max=True)  # a position in the file, as a share of its length


@SETTINGS
@given(FRACTION)
def test_truncated(tmp_path, fraction):
    data = good()[1]
    assert outcome(tmp_path, data[:int(fraction * len(data))]) == "refused"


@SETTINGS
@given(st.lists(st.tuples(FRACTION, st.integers(1, 255)), min_size=1, max_size=8))
def test_flipped_bytes(tmp_path, flips):
    data = bytearray(good()[1])
    for fraction, mask in flips:
        data[int(fraction * len(data))] ^= mask
    assert outcome(tmp_path, bytes(data)) in ("refused", "loaded")


JUNK = st.one_of(st.none(), st.integers(-5, 10 ** 6), st.floats(allow_nan=True),
                 st.text(max_size=5),
                 st.lists(st.integers(-3, 12), max_size=3),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                 st.builds(lambda n: torch.zeros(n), st.integers(0, 3)))
FIELDS = ["state_dict", "Nbit_dict", "epoch", "acc", "best_acc", "optimizer", "rng", "arch",
          "tensor", "scheme_entry", "optimizer_state", "rng_torch"]


@SETTINGS
@given(st.sampled_from(FIELDS), JUNK)
def test_fields_of_the_wrong_type(tmp_path, field, junk):
    base = good()[0]
    ckpt = dict(base)
    ckpt["state_dict"] = dict(base["state_dict"])
    if field == "tensor":
        ckpt["state_dict"]["layer1.0.conv1.scale"] = junk
    elif field == "scheme_entry":
        ckpt["Nbit_dict"] = {**base["Nbit_dict"], "conv1": junk}
    elif field == "optimizer_state":
        ckpt["optimizer"] = {**base["optimizer"], "state": junk}
    elif field == "rng_torch":
        ckpt["rng"] = {**base["rng"], "torch": junk}
    else:
        ckpt[field] = junk
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    assert outcome(tmp_path, buffer.getvalue()) in ("refused", "loaded")
