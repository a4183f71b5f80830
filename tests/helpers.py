"""What several test modules share: the repository path, running a script, test models."""
import json
import math
import os
import subprocess
import sys

import torch

from models import build_model
from utils.quant.corrections import CORRECTED, RELEASE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAULTS = os.path.join(REPO, "tests", "faults.py")


def run_script(cwd, script, args, expect=0, timeout=600, env=None, faults=()):
    """Run ``script`` of the repository with ``args`` (a string or a list) in ``cwd``, with
    ``env`` added to the environment and ``faults`` injected (``tests/faults.py``); check its
    exit status."""
    args = args.split() if isinstance(args, str) else [str(a) for a in args]
    driver = [FAULTS, *faults] if faults else []
    proc = subprocess.run([sys.executable, *driver, os.path.join(REPO, script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == expect, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def last_json(proc):
    """The JSON object on the last stdout line of a script."""
    return json.loads(proc.stdout.strip().splitlines()[-1])


def resnet(depth=20, num_classes=10, act=4, corrections=RELEASE):
    """The release's CIFAR ResNet, ``-a resnet``, in float form."""
    return build_model("resnet", num_classes, act, corrections, depth=depth)


def mixed_model(act=4, form="bits", continuous=False, corrections=CORRECTED):
    """A ResNet-8 at precisions 0..7 per layer with a 3-bit classifier bias and random BN
    statistics; ``continuous``: bit planes perturbed off 0/1, as in the middle of BSQ training.
    Precision 0 exists with ``corrections.zero_precision`` (the release keeps 1 bit)."""
    torch.manual_seed(1)
    model = resnet(depth=8, act=act, corrections=corrections)
    scheme = {name: [i % 8, 0] for i, (name, _) in enumerate(model.quant_layers())}
    scheme["fc"] = [5, 3]
    model.to_bits_(scheme)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
        if continuous:
            for _, layer in model.quant_layers():
                for p, n, _ in layer.bit_groups():
                    p.add_(torch.rand_like(p) * 0.9).clamp_(0, 2)
                    n.add_(torch.rand_like(n) * 0.9).clamp_(0, 2)
    return model.to_finetune_() if form == "finetune" else model


EMPTY_LAYERS = ("layer2.0.conv2", "layer3.0.conv1")  # those of ``empty_layers_model``


def empty_layers_model(corrections=RELEASE):
    """A ResNet-8 in bits form at 8 bits but for two layers left all zero (``EMPTY_LAYERS``, at
    the release's 1 bit; with ``corrections.zero_precision``, at 0), as BSQ leaves a layer whose
    every plane it pushed to zero, and a 3-bit classifier bias."""
    torch.manual_seed(0)
    model = resnet(depth=8, corrections=corrections)
    scheme = {name: [0 if name in EMPTY_LAYERS else 8, 0] for name, _ in model.quant_layers()}
    scheme["fc"] = [8, 3]
    return model.to_bits_(scheme)


SHORTCUTS = ("layer2.0.downsample.0", "layer3.0.downsample.0")  # in older releases' Nbit_dict
def release_layout(model, optimizer=None, epoch=1, scale_shape=()):
    """The checkpoint dict the release would write for ``model``: keys prefixed ``module.``,
    0-dim ``scale``/``biasscale`` (or ``scale_shape``), an ``Nbit_dict`` listing the shortcut convs
    and, in bits form, never 0 (an all-zero layer keeps one zero plane at precision 1), and only
    the fields ``epoch state_dict acc best_acc optimizer`` (+ ``Nbit_dict``)."""
    state = {f"module.{k}": v.reshape(scale_shape) if k.endswith("scale") else v
             for k, v in model.state_dict().items()}
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ckpt = {"epoch": epoch, "state_dict": state, "acc": 10.0, "best_acc": 10.0,
            "optimizer": optimizer.state_dict()}
    if model.form == "bits":
        ckpt["Nbit_dict"] = {k: [max(v[0], 1), v[1]] for k, v in model.scheme().items()}
    elif model.form == "finetune":
        ckpt["Nbit_dict"] = model.scheme()
    if "Nbit_dict" in ckpt:
        ckpt["Nbit_dict"].update({name: [8, 0] for name in SHORTCUTS})
    return ckpt


def model_in(form):
    """``mixed_model`` in ``form`` (bits, finetune or float), in eval mode."""
    model = mixed_model(form="finetune" if form == "finetune" else "bits")
    return (model.to_float_() if form == "float" else model).eval()


def malicious_checkpoint(path, marker):
    """A torch.save file whose unpickling would create ``marker``: what loading must refuse."""

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('ran')",)

    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "extra": Payload()}, path)


def board_scalars(folder):
    """The scalars of the TensorBoard run in ``folder``, as TensorBoard reads them (purges
    included): ``{tag: [(step, value), ...]}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def assert_board_is_the_log(folder):
    """The TensorBoard scalars of the run in ``folder`` hold its ``log.txt`` rows, epoch for
    epoch (as float32, against log.txt's 6 digits); returns them."""
    from utils.report.board import TAGS
    from utils.store.epochlog import read_log
    scalars, log = board_scalars(folder), read_log(os.path.join(folder, "log.txt"))
    for column, tag in TAGS.items():
        assert [step for step, _ in scalars[tag]] == log["epoch"], tag
        for (_, value), logged in zip(scalars[tag], log[column]):
            assert math.isclose(value, logged, rel_tol=1e-5, abs_tol=1e-7), (tag, value, logged)
    return scalars


def board_hparams(folder):
    """The hparams and the metric names the run in ``folder`` recorded for TensorBoard's HParams
    dashboard: ``({name: value}, [metric tag, ...])``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    events = EventAccumulator(str(folder))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]).experiment
    values = {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
              for name, value in start.hparams.items()}
    return values, [m.name.tag for m in experiment.metric_infos]
