"""Seconds per training epoch of each script's loop, and what the data path adds to it.

Loops: ``train`` (float weights, cifar_train.py), ``bsq`` (bits + regularizer,
cifar_prune_STE.py), ``finetune`` (cifar_finetune.py), all through ``utils.train.engine
.train_one_epoch``. Data: ``premade`` (normalised batches made beforehand: no data cost),
``device`` (the default DeviceLoader: crop, flip, normalise per batch) and ``release`` (the
release's DataLoader + PIL transforms). Random uint8 images stand in for CIFAR (the data path's
cost does not depend on the pixels), so it runs anywhere. Variants are timed interleaved; medians
and ratios to ``premade`` are printed as one JSON object, with the time of the data path alone
(iterating the loader without training) as a share of a BSQ epoch: on a noisy machine that share
is the steadier measure of what the data path adds.

    python benchmarks/epoch.py --images 2560 --repeats 3
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import build_model  # noqa: E402
from utils.data.cifar import DeviceLoader  # noqa: E402
from utils.data.release import OnDevice, release_loaders  # noqa: E402
from utils.train.engine import Speed, build_steps, make_optimizer, train_one_epoch  # noqa: E402


def models(depth):
    return {"train": (build_model("resnet", depth=depth), 0.0),
            "bsq": (build_model("resnet", depth=depth).to_bits_(8), 0.01),
            "finetune": (build_model("resnet", depth=depth).to_bits_(8).to_finetune_(), 0.0)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--images", type=int, default=2560)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True,
                        help="on a GPU, replay each step as a CUDA graph (the scripts' default)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (args.images,), generator=gen)
    device_loader = DeviceLoader(images, labels, args.batch, device, train=True)
    premade = [(x.clone(), y.clone()) for x, y in device_loader]
    release_train, _ = release_loaders(images, labels, images, labels, args.batch, args.batch,
                                       args.workers)
    loaders = {"premade": premade, "device": device_loader,
               "release": OnDevice(release_train, device)}
    nets = {k: (m.to(device), d) for k, (m, d) in models(args.depth).items()}
    variants = [("bsq", name) for name in loaders] + [("train", "device"), ("train", "premade"),
                                                      ("finetune", "device")]
    speed = Speed(cuda_graphs=device.type == "cuda" and args.cuda_graphs)
    steps = {k: build_steps(m, make_optimizer(m, 0.01, 0.9, 1e-4), device, speed, d)[0]
             for k, (m, d) in nets.items()}
    times = {v: [] for v in variants}
    for i in range(args.repeats + 1):
        for loop, data in variants:
            model = nets[loop][0]
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            train_one_epoch(model, loaders[data], steps[loop])
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:  # the first round warms up
                times[(loop, data)].append(time.perf_counter() - start)
    seconds = {f"{loop}/{data}": statistics.median(t) for (loop, data), t in times.items()}
    for data in ("device", "release"):  # the data path alone: iterate, no training
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for x, _ in loaders[data]:
                x.sum().item()
            runs.append(time.perf_counter() - start)
        seconds[f"data-only/{data}"] = statistics.median(runs)
    print(json.dumps({
        "benchmark": "epoch", "depth": args.depth, "images": args.images, "batch": args.batch,
        "repeats": args.repeats, "seconds_median": {k: round(v, 3) for k, v in seconds.items()},
        "data_path_ratio": {k: round(v / seconds[k.split("/")[0] + "/premade"], 3)
                            for k, v in seconds.items() if k.split("/")[0] + "/premade" in seconds},
        "data_only_share_of_bsq_epoch": {
            data: round(seconds[f"data-only/{data}"] / seconds["bsq/premade"], 4)
            for data in ("device", "release")},
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "cuda_graphs": device.type == "cuda" and args.cuda_graphs,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "workers": args.workers,
    }))


if __name__ == "__main__":
    main()
