"""Seconds of whole short runs, float training against BSQ, side by side, and where they go.

Each run is the scripts' epoch loop (``utils.train.fit.fit``): training, the test pass, log.txt
and the checkpoints, for ``--epochs`` epochs on random uint8 images (the cost does not depend
on the pixels), in a temporary folder. ``float`` trains the float network (cifar_train.py),
``bsq`` the same network at 8 bits with the regularizer (cifar_prune_STE.py, without
re-quantizations: those are the release's protocol, not a cost of the step). Runs alternate
(float, bsq, float, ...) after one untimed round, so that machine noise hits both alike; the
medians of each phase (training, test, checkpoint writing, the rest) and the ratios bsq / float
are one JSON line.

    python benchmarks/run.py --images 2000 --test-images 2000 --epochs 3 --repeats 3
    python benchmarks/run.py -a vgg16_bn --images 512 --test-images 512 --epochs 2
"""
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import utils.train.fit as loop  # noqa: E402
from models import arch_title, build_model, model_config, model_flags  # noqa: E402
from utils.cli.flags import Parser  # noqa: E402
from utils.data.cifar import DeviceLoader  # noqa: E402
from utils.train.fit import Schedule, fit  # noqa: E402

PHASES = {"train": "train_one_epoch", "test": "evaluate", "checkpoint": "save_checkpoint"}


@contextlib.contextmanager
def timed_phases(seconds):
    """Add the time spent in each of ``PHASES``'s functions (as ``fit`` calls them) to
    ``seconds[phase]``."""
    real = {phase: getattr(loop, name) for phase, name in PHASES.items()}

    def timer(phase):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return real[phase](*args, **kwargs)
            finally:
                seconds[phase] += time.perf_counter() - start
        return call

    for phase, name in PHASES.items():
        setattr(loop, name, timer(phase))
    try:
        yield
    finally:
        for phase, name in PHASES.items():
            setattr(loop, name, real[phase])


def one_run(kind, config, data, args):
    torch.manual_seed(0)
    model = build_model(**config)
    if kind == "bsq":
        model.to_bits_(8)
    train = DeviceLoader(*data["train"], args.batch, "cpu", True, seed=0)
    test = DeviceLoader(*data["test"], 100, "cpu", False)
    seconds = dict.fromkeys(PHASES, 0.0)
    with tempfile.TemporaryDirectory() as folder, timed_phases(seconds):
        start = time.perf_counter()
        fit(model, train, test, Schedule(args.epochs, 0.01), folder,
            decay=0.01 if kind == "bsq" else 0.0, progress_every=0)
        total = time.perf_counter() - start
    return {**seconds, "other": total - sum(seconds.values()), "total": total}


def main():
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_flags("model", model_flags())
    parser.add_argument("-d", "--dataset", default="cifar10")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = model_config(args)
    gen = torch.Generator().manual_seed(0)
    data = {split: (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen),
                    torch.randint(0, 10, (n,), generator=gen))
            for split, n in (("train", args.images), ("test", args.test_images))}
    runs = {"float": [], "bsq": []}
    for i in range(args.repeats + 1):  # the first round warms up
        for kind in runs:
            result = one_run(kind, config, data, args)
            if i:
                runs[kind].append(result)
    medians = {kind: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for kind, rs in runs.items()}
    print(json.dumps({
        "benchmark": "whole run", "network": arch_title(args), "images": args.images,
        "test_images": args.test_images, "epochs": args.epochs, "batch": args.batch,
        "repeats": args.repeats,
        "seconds_median": {kind: {k: round(v, 3) for k, v in m.items()}
                           for kind, m in medians.items()},
        "ratio_bsq_to_float": {k: round(medians["bsq"][k] / medians["float"][k], 3)
                               for k in medians["bsq"] if medians["float"][k] > 0},
        "device": "cpu", "torch": torch.__version__, "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
