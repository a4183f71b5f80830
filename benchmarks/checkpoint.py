"""Seconds and memory of a BSQ checkpoint at ImageNet scale: writing it, and reading it back for
``--resume`` (the file, the model's state, the optimizer's momentum).

The model is ``-a`` (torchvision's ResNet-50 by default: 25.5M weights, 23.5M of them quantized)
at ``--Nbits`` in bits form, its SGD momentum filled, as after a step. ``save_checkpoint``
streams the file into its temporary file (``utils/store/files.py``); ``--compare`` also times
the way it wrote before, serialised into memory first. Runs alternate between the ways, in a
temporary folder on the disk of ``--dir``; medians, the file's size and the peak resident memory
each way adds to the process, as one JSON line.

    python benchmarks/checkpoint.py --compare --repeats 3
"""
import argparse
import io
import json
import os
import resource
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import build_model, load_model_state  # noqa: E402
from utils.store.checkpoint import checkpoint_state, load_checkpoint, save_checkpoint  # noqa: E402
from utils.store.files import atomic_write  # noqa: E402
from utils.train.engine import make_optimizer  # noqa: E402


def peak_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def in_memory_first(state, path):
    """The way ``save_checkpoint`` wrote before: the whole file in a buffer, then written."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getbuffer())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-a", "--arch", default="torchvision.resnet50")
    parser.add_argument("--Nbits", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare", action="store_true",
                        help="also time writing it into memory first (the earlier way)")
    parser.add_argument("--dir", default=".", help="a folder on the disk to measure")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(args.arch, num_classes=1000, act=4).to_bits_(args.Nbits)
    optimizer = make_optimizer(model, 0.1, 0.9, 1e-4)
    for p in model.parameters():
        optimizer.state[p]["momentum_buffer"] = torch.rand_like(p)
    state = checkpoint_state(model, epoch=1, acc=1.0, best_acc=1.0, optimizer=optimizer)
    ways = {"streamed": save_checkpoint, **({"in memory first": in_memory_first}
                                            if args.compare else {})}
    seconds = {way: [] for way in [*ways, "load + resume"]}
    memory = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = os.path.join(folder, "checkpoint.pth.tar")
        for _ in range(args.repeats):
            for way, save in ways.items():
                before = peak_gb()
                start = time.perf_counter()
                save(state, path)
                seconds[way].append(time.perf_counter() - start)
                memory[way] = max(memory.get(way, 0.0), peak_gb() - before)
            start = time.perf_counter()
            ckpt = load_checkpoint(path)
            load_model_state(model, ckpt, path)
            optimizer.load_state_dict(ckpt["optimizer"])
            seconds["load + resume"].append(time.perf_counter() - start)
            del ckpt
        size = os.path.getsize(path)
    print(json.dumps({
        "benchmark": "checkpoint", "network": model.arch_spec["arch"], "nbits": args.Nbits,
        "weights": model.size()[0], "file_gb": round(size / 1e9, 3),
        "seconds_median": {k: round(statistics.median(v), 2) for k, v in seconds.items()},
        "seconds": {k: [round(s, 2) for s in v] for k, v in seconds.items()},
        "peak_rss_added_gb": {k: round(v, 2) for k, v in memory.items()},
        "repeats": args.repeats, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
