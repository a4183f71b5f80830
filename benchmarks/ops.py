"""ATen operators dispatched per training step, counted with torch.profiler on the CPU.

A BSQ step is launch-bound on a GPU: its time goes with the number of operators it dispatches,
not with its arithmetic. This counts the top-level ATen operators (those not nested in another
ATen operator; autograd's backward operators and the optimizer's included) of one training step
of ResNet-20 at a small batch, for the three weight forms, and prints one JSON object.

    python benchmarks/ops.py
"""
import argparse
import json
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import build_model  # noqa: E402
from utils.train.engine import make_optimizer, make_step  # noqa: E402


def top_level_ops(step, x, y):
    """``{operator: count}`` of the ATen operators one call of ``step`` dispatches at top level."""
    step(x, y)  # lazily created state (momentum buffers, cached plane weights) first
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(x, y)
    counts = {}
    for event in prof.events():
        parent = event.cpu_parent
        if event.name.startswith("aten::") and (parent is None
                                                or not parent.name.startswith("aten::")):
            counts[event.name] = counts.get(event.name, 0) + 1
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--top", type=int, default=8, help="list the N most frequent operators")
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    models = {"float": (build_model("resnet", depth=args.depth), 0.0),
              "bits": (build_model("resnet", depth=args.depth).to_bits_(8), 0.01),
              "finetune": (build_model("resnet", depth=args.depth).to_bits_(8).to_finetune_(), 0.0)}
    report = {}
    for name, (model, decay) in models.items():
        counts = top_level_ops(make_step(model, make_optimizer(model, 0.1, 0.9, 1e-4), decay), x, y)
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:args.top]
        report[name] = {"ops": sum(counts.values()), "most": dict(top)}
    print(json.dumps({"benchmark": "ops per training step", "depth": args.depth,
                      "batch": args.batch, "ops": {k: v["ops"] for k, v in report.items()},
                      "most_frequent": {k: v["most"] for k, v in report.items()},
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
