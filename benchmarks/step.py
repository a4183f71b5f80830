"""Milliseconds per training step at batch 128: float weights vs BSQ bits vs finetune.

All three are the same network (``-a`` and its flags, the scripts' model flags; the CIFAR ResNet-20
by default) with the same activation quantizers; only the weight form differs.
Each variant is the step the scripts run (``utils.train.engine.build_steps``) with a speed setting:
``+graph`` replays it as a CUDA graph (the scripts' default on one GPU), ``+compile`` compiles
the model, ``+amp`` and ``+channels_last`` as their flags. Steps are timed interleaved (float,
bits, finetune, float, ...) so that machine noise hits all variants alike; medians over the
repeats, and their ratios to float, are printed as one JSON object.

    python benchmarks/step.py --depth 20 --repeats 20                     # CPU: eager
    python benchmarks/step.py --variants bits finetune float+graph bits+graph finetune+graph \
        bits+compile+graph                                                # one GPU
"""
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import arch_title, build_model, model_config, model_flags  # noqa: E402
from utils.cli.flags import Parser  # noqa: E402
from utils.train.engine import Speed, build_steps, make_optimizer  # noqa: E402

FORMS = {"float": (lambda config: build_model(**config), 0.0),
         "bits": (lambda config: build_model(**config).to_bits_(8), 0.01),
         "finetune": (lambda config: build_model(**config).to_bits_(8).to_finetune_(), 0.0)}
SPEED = {"graph": "cuda_graphs", "compile": "compile", "amp": "amp",
         "channels_last": "channels_last"}


def make(variant, config, device):
    """The training step of ``variant`` (e.g. ``bits+compile+graph``) on ``device``."""
    form, *flags = variant.split("+")
    build, decay = FORMS[form]
    model = build(config).to(device)
    speed = Speed(**{SPEED[f]: True for f in flags})
    return build_steps(model, make_optimizer(model, 0.01, 0.9, 1e-4), device, speed, decay)[0]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_flags("model", model_flags())
    parser.add_argument("-d", "--dataset", default="cifar10")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (graph capture, "
                        "compilation) before the timed ones")
    parser.add_argument("--variants", nargs="+", default=["bits", "finetune"],
                        help="besides float: FORM[+graph][+compile][+amp][+channels_last], "
                             "FORM one of float, bits, finetune (+graph needs one GPU)")
    args = parser.parse_args()
    config = model_config(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    steps = {name: make(name, config, device) for name in ["float", *args.variants]}
    times = {name: [] for name in steps}
    for i in range(args.warmup + args.repeats):
        for name, step in steps.items():
            sync(device)
            start = time.perf_counter()
            step(x, y)
            sync(device)
            if i >= args.warmup:
                times[name].append(1000 * (time.perf_counter() - start))
    ms = {name: statistics.median(t) for name, t in times.items()}
    print(json.dumps({
        "benchmark": "train step", "network": arch_title(args), "batch": args.batch,
        "repeats": args.repeats, "ms_median": {k: round(v, 2) for k, v in ms.items()},
        "ratio_to_float": {k: round(v / ms["float"], 3) for k, v in ms.items()},
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
