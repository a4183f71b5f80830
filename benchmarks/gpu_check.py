"""Every GPU figure of the project in one command (under 8 minutes on one H100).

    python benchmarks/gpu_check.py               # on a machine with one GPU
    python benchmarks/gpu_check.py --quick       # the same checks on a tiny run (any machine)

1. Data: unpacks the JPEG CIFAR-10 (``--archive``, with ``--tool``) into ``data/cifar10-jpg``
   (ignored by git) unless it is there. ``--quick`` writes a tiny generated CIFAR-10 instead.
2. The CUDA tests: the CUDA graph replay against eager, the compiled step against eager.
3. Step times (``benchmarks/step.py``): float / bits / finetune, eager / CUDA graphs /
   compile + CUDA graphs.
4. The real scripts: one BSQ epoch and one finetune epoch over the whole training set with
   their test passes, on the fast path (the default) and eager (``--no-cuda-graphs``); the
   seconds are read from their ``log.txt``.
5. Eager against fast after a few BSQ epochs (same seed, ``--deterministic``): accuracies, and
   whether the two checkpoints are bit-identical.
6. The projected time of the recipe for one alpha: 350 BSQ + 300 finetune epochs.

Prints a table and, last, one JSON line naming the device. A step that fails is reported and
the others still run. BSQ starts from the release's 8-bit ResNet-20 when ``--start`` (by default
the shared reference file) exists, else from a random 8-bit model.
"""
import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, "..", "shared")
sys.path.insert(0, REPO)

from utils.store.checkpoint import load_checkpoint  # noqa: E402
from utils.store.epochlog import read_log  # noqa: E402

STEP_VARIANTS = ["bits", "finetune", "float+graph", "bits+graph", "finetune+graph",
                 "bits+compile+graph"]
RECIPE_EPOCHS = {"bsq": 350, "finetune": 300}
BSQ_GOAL_S = 1.0  # one BSQ epoch of ResNet-20 with its test pass on one H100


def run(command, timeout):
    """Run a command; returns (ok, seconds, stdout, the last stderr line)."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, timeout, "", f"timed out after {timeout} s"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return (proc.returncode == 0, time.perf_counter() - start, proc.stdout,
            lines[-1] if lines else "")


def script(name, *flags):
    return [sys.executable, os.path.join(REPO, name), *flags]


def prepare_data(args):
    """The data root: the JPEG CIFAR-10 unpacked once, or (``--quick``) a tiny generated one."""
    if args.quick:
        sys.path.insert(0, os.path.join(REPO, "tests"))
        from cifar_fixture import make_cifar

        return make_cifar(os.path.join(args.work, "tiny-data"), "cifar10", n_train=500,
                          n_test=200)
    root = os.path.join(REPO, "data", "cifar10-jpg")
    if not os.path.isdir(os.path.join(root, "cifar-10-batches-py")):
        ok, _, _, err = run([sys.executable, args.tool, "--archive", args.archive, "--out", root],
                            600)
        if not ok:
            raise SystemExit(f"error: cannot unpack {args.archive} ({err}): pass --archive and "
                             "--tool, or --quick")
    return root


def start_model(args):
    """``--start`` unpacked (a .gz) into the work folder, or None."""
    if args.quick or not os.path.isfile(args.start):
        return None
    if not args.start.endswith(".gz"):
        return args.start
    path = os.path.join(args.work, "start.pth.tar")
    with gzip.open(args.start) as f, open(path, "wb") as out:
        shutil.copyfileobj(f, out)
    return path


def epoch_seconds(folder):
    log = read_log(os.path.join(folder, "log.txt"))
    return log["seconds"][-1], log["test_acc"][-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run of every check: ResNet-8 on 500 generated images")
    parser.add_argument("--archive", default=os.path.join(SHARED, "data", "cifar10-jpg.tar.gz"))
    parser.add_argument("--tool", default=os.path.join(SHARED, "tools", "cifar_jpg_to_batches.py"))
    parser.add_argument("--start", default=os.path.join(
        SHARED, "reference", "release-checkpoints", "resnet-20-8bit.pth.tar.gz"))
    parser.add_argument("--work", default=os.path.join(REPO, "runs", "gpu_check"),
                        help="folder for the runs (ignored by git)")
    parser.add_argument("--epochs", type=int, default=3,
                        help="BSQ epochs of the eager-against-fast comparison")
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if gpu else "cpu"
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    depth = "8" if args.quick else "20"
    data = prepare_data(args)
    common = ["--depth", depth, "--data-root", data, "--manualSeed", "0", "--progress", "0"]
    start = start_model(args)
    bsq = common + ["--bin", "--L1", "--decay", "0.01", "--Prun_Int", "100"] + (
        ["--model", start] if start else [])
    rows, figures = [], {"device": device, "torch": torch.__version__, "quick": args.quick}

    def record(what, value, note=""):
        rows.append((what, value, note))
        print(f"{what:<44} {value:<24} {note}", flush=True)

    tests = ["tests/test_cudagraphs.py", "tests/test_compile.py"]
    ok, seconds, out, err = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                 *tests], 600)
    summary = out.strip().splitlines()[-1] if out.strip() else err
    figures["cuda_tests"] = {"ok": ok, "summary": summary}
    record("CUDA tests (graphs, compile)", "passed" if ok else "FAILED", summary)

    variants = STEP_VARIANTS if gpu else ["bits", "finetune", "bits+compile"]
    ok, _, out, err = run([sys.executable, os.path.join(REPO, "benchmarks", "step.py"),
                           "--depth", depth, "--repeats", "20" if gpu else "3", "--variants",
                           *variants], 600)
    if ok:
        steps = json.loads(out.strip().splitlines()[-1])["ms_median"]
        figures["step_ms"] = steps
        for name, ms in steps.items():
            record(f"train step {name}, batch 128", f"{ms:.2f} ms")
    else:
        record("step benchmark", "FAILED", err)

    modes = [("fast", []), ("eager", ["--no-cuda-graphs"])] if gpu else [("eager", [])]
    epochs = {}
    for stage in ("bsq", "finetune"):
        for mode, speed in modes:
            folder = os.path.join(args.work, f"{stage}-{mode}")
            if stage == "bsq":
                command = script("cifar_prune_STE.py", *bsq, "--epochs", "1")
            else:  # finetune the model that BSQ epoch wrote
                command = script("cifar_finetune.py", *common, "--bin", "--epochs", "1",
                                 "--model", os.path.join(args.work, f"bsq-{mode}",
                                                         "checkpoint.pth.tar"))
            ok, _, _, err = run(command + speed + ["--checkpoint", folder], 600)
            if not ok:
                record(f"one {stage} epoch ({mode})", "FAILED", err)
                continue
            seconds, acc = epoch_seconds(folder)
            epochs[f"{stage}_{mode}"] = seconds
            record(f"one {stage} epoch + test pass ({mode})", f"{seconds:.2f} s",
                   f"test accuracy {acc:.2f}%")
    figures["epoch_s"] = epochs

    runs = {}
    for mode, speed in modes if gpu else []:  # without a GPU there is no fast path to compare
        folder = os.path.join(args.work, f"compare-{mode}")
        ok, _, out, err = run(script("cifar_prune_STE.py", *bsq, "--epochs", str(args.epochs),
                                     "--deterministic", *speed, "--checkpoint", folder), 600)
        if ok:
            runs[mode] = (json.loads(out.strip().splitlines()[-1])["acc"],
                          load_checkpoint(os.path.join(folder, "checkpoint.pth.tar")))
        else:
            record(f"{args.epochs} BSQ epochs ({mode})", "FAILED", err)
    if len(runs) == 2:
        (fast_acc, fast), (eager_acc, eager) = runs["fast"], runs["eager"]
        same = fast["Nbit_dict"] == eager["Nbit_dict"] and all(
            torch.equal(v, eager["state_dict"][k]) for k, v in fast["state_dict"].items())
        figures["fast_vs_eager"] = {"epochs": args.epochs, "fast_acc": fast_acc,
                                    "eager_acc": eager_acc, "bit_identical": same}
        record(f"after {args.epochs} BSQ epochs: fast / eager", f"{fast_acc:.2f}% / "
               f"{eager_acc:.2f}%", "bit-identical" if same else "checkpoints differ")

    mode = "fast" if gpu else "eager"
    if f"bsq_{mode}" in epochs and f"finetune_{mode}" in epochs:
        minutes = (RECIPE_EPOCHS["bsq"] * epochs[f"bsq_{mode}"]
                   + RECIPE_EPOCHS["finetune"] * epochs[f"finetune_{mode}"]) / 60
        figures["recipe_minutes"] = round(minutes, 1)
        record("projected recipe, 350 BSQ + 300 finetune", f"{minutes:.1f} min",
               f"({mode} path)")
    if gpu and "bsq_fast" in epochs:
        figures["bsq_epoch_goal_met"] = epochs["bsq_fast"] <= BSQ_GOAL_S
        record(f"BSQ epoch <= {BSQ_GOAL_S:g} s", "yes" if figures["bsq_epoch_goal_met"] else "no")

    print("\n| check | figure | note |\n| --- | --- | --- |")
    for what, value, note in rows:
        print(f"| {what} | {value} | {note} |")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
