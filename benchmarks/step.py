"""Milliseconds per training step at batch 128: float weights vs BSQ bits vs finetune.

All three are the same ResNet with the same activation quantizers; only the weight form differs.
Steps are timed interleaved (float, bits, finetune, float, ...) so that machine noise hits all
variants alike; medians over the repeats, and their ratios to float, are printed as one JSON
object. ``--variants`` adds the bits step with ``--channels-last``, ``--amp`` or ``--compile``,
and on a GPU the steps replayed as CUDA graphs (``+graph``), as the scripts run them there.

    python benchmarks/step.py --depth 20 --repeats 20
    python benchmarks/step.py --variants bits bits+channels_last bits+amp bits+compile
    python benchmarks/step.py --variants bits finetune float+graph bits+graph finetune+graph
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import resnet  # noqa: E402
from utils.engine import make_step  # noqa: E402
from utils.cudagraphs import CUDAGraphStep  # noqa: E402


def make(model, decay, amp=False, channels_last=False, compile=False, graph=False):
    """One training step exactly as the scripts run it (``utils.engine.make_step``), with their
    speed flags; ``graph`` replays it as a CUDA graph, as ``--cuda-graphs`` does."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    net = torch.compile(model) if compile else model
    step = make_step(model, optimizer, decay, amp, channels_last, net)
    return CUDAGraphStep(step) if graph else step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=["bits", "finetune"],
                        help="besides float: bits, finetune, bits+channels_last, bits+amp, "
                             "bits+compile; on CUDA also float+graph, bits+graph, finetune+graph, "
                             "bits+compile+graph, bits+amp+graph (replayed as a CUDA graph)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    bits = lambda: resnet(depth=args.depth).to_bits_(8).to(device)  # noqa: E731
    variants = {
        "float": lambda: make(resnet(depth=args.depth).to(device), 0.0),
        "bits": lambda: make(bits(), 0.01),
        "finetune": lambda: make(bits().to_finetune_(), 0.0),
        "bits+channels_last": lambda: make(bits(), 0.01, channels_last=True),
        "bits+amp": lambda: make(bits(), 0.01, amp=True),
        "bits+compile": lambda: make(bits(), 0.01, compile=True),
        "float+graph": lambda: make(resnet(depth=args.depth).to(device), 0.0, graph=True),
        "bits+graph": lambda: make(bits(), 0.01, graph=True),
        "finetune+graph": lambda: make(bits().to_finetune_(), 0.0, graph=True),
        "bits+compile+graph": lambda: make(bits(), 0.01, compile=True, graph=True),
        "bits+amp+graph": lambda: make(bits(), 0.01, amp=True, graph=True),
    }
    steps = {name: variants[name]() for name in ["float", *args.variants]}
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
        "benchmark": "train step", "depth": args.depth, "batch": args.batch,
        "repeats": args.repeats, "ms_median": {k: round(v, 2) for k, v in ms.items()},
        "ratio_to_float": {k: round(v / ms["float"], 3) for k, v in ms.items()},
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
