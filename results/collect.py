"""Copy a sweep's small files into ``results/`` and pack each trained model.

    python results/collect.py SWEEP_OUT results/NAME --data-root DIR

For every stage folder of ``SWEEP_OUT`` that finished (its ``result.json``): ``result.json`` (the
stage's final JSON line, its command and wall time), ``log.txt``, ``scheme.json`` and, for BSQ to
a budget, ``controller.json`` (every update of alpha). For every stage that trained a bit model
(BSQ: its re-quantized ``checkpoint.pth.tar``; a finetune: its ``best_bin.pth.tar``, the file
its ``result.json`` names): ``model.bsq``, the packed file
(``export.py --export``), and its test accuracy on the JPEG CIFAR-10 test set and on ``SAMPLE``
(every 10th test image, all classes) into ``results/NAME/models.json``, both computed as
``export.py --load FILE --evaluate`` computes them (tests/e2e/test_results.py checks the files
against them). Also ``sweep.json``, ``sweep.md`` and ``tradeoff.png`` when the sweep has written
them. Checkpoints are not copied: ``results/restore.py`` writes them back from the packed files.
"""
import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import load_model  # noqa: E402
from models.packed import pack, unpack  # noqa: E402
from utils.data.cifar import DeviceLoader, load_cifar  # noqa: E402
from utils.store.checkpoint import load_checkpoint, state_form  # noqa: E402
from utils.store.files import write_json  # noqa: E402
from utils.sweep.stagejob import RESULT  # noqa: E402
from utils.train.engine import evaluate  # noqa: E402

SMALL = (RESULT, "log.txt", "scheme.json", "controller.json")  # the last: a budget's BSQ
PACKED = "model.bsq"  # a trained stage's model, packed
SWEEP = ("sweep.json", "sweep.md", "tradeoff.png")
SAMPLE = 10  # the check sample: test images 0, 10, 20, ... (the JPEG test batch is class-sorted)
TEST_BATCH = 100


def accuracy(model, images, labels):
    """Test accuracy (%) on ``images``, as ``export.py --evaluate`` computes it: batches of 100
    in order on the CPU."""
    return evaluate(model, DeviceLoader(images, labels, TEST_BATCH, "cpu", train=False))["acc"]


def trained_model(folder, files):
    """The name of the bit model a finished training stage made (the file its ``result.json``
    names), or None: a conversion, or a float model."""
    if "log.txt" not in files:
        return None
    with open(os.path.join(folder, RESULT)) as f:
        name = os.path.basename(json.load(f).get("checkpoint") or "")
    if name not in files or state_form(load_checkpoint(os.path.join(folder, name))
                                       ["state_dict"]) == "float":
        return None
    return name


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep")
    parser.add_argument("dest")
    parser.add_argument("--data-root", required=True)
    args = parser.parse_args()
    images, labels = load_cifar("cifar10", args.data_root, train=False, download=False)
    index_path = os.path.join(args.dest, "models.json")
    index = {}
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    for folder, _, files in sorted(os.walk(args.sweep)):
        if RESULT not in files:
            continue
        rel = os.path.relpath(folder, args.sweep)
        out = os.path.join(args.dest, rel)
        os.makedirs(out, exist_ok=True)
        for name in SMALL:
            if name in files:
                shutil.copy2(os.path.join(folder, name), out)
        trained = trained_model(folder, files)
        if trained and os.path.join(rel, PACKED) not in index:
            model, ckpt = load_model(os.path.join(folder, trained))
            packed = os.path.join(out, PACKED)
            pack(model, packed, checkpoint=os.path.join(rel, trained), acc=ckpt.get("acc"))
            rebuilt = unpack(packed)[0]
            index[os.path.join(rel, PACKED)] = {
                "acc": accuracy(rebuilt, images, labels),
                "sample_acc": accuracy(rebuilt, images[::SAMPLE], labels[::SAMPLE])}
            print(rel, index[os.path.join(rel, PACKED)], flush=True)
    for name in SWEEP:
        if os.path.exists(os.path.join(args.sweep, name)):
            shutil.copy2(os.path.join(args.sweep, name), args.dest)
    write_json(dict(sorted(index.items())), index_path)


if __name__ == "__main__":
    main()
