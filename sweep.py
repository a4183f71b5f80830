"""The README's whole recipe for a list of alphas, with the train-from-scratch baseline at each.

    python sweep.py --decays 0.005 0.01 0.02 --data-root data --out runs/sweep
    python sweep.py --decays 0.005 0.01 --epochs-scale 0.01 --float-model CKPT --out runs/short

Stages, each a subprocess with the README's hyperparameters (epoch counts, lr milestones and
``--Prun_Int`` multiplied by ``--epochs-scale``, rounded, at least 1), each in its own folder
under ``--out`` with its ``stdout.txt``/``stderr.txt``:

    float/               cifar_train.py (skipped with --float-model)
    float-8/             convert.py --Nbits 8
    alpha-A/bsq/         cifar_prune_STE.py --decay A --bin --L1
    alpha-A/finetune/    cifar_finetune.py of the BSQ result
    alpha-A/scratch/     convert.py --dict: the float model at BSQ's scheme
    alpha-A/scratch-ft/  cifar_finetune.py of that, the "train from scratch" baseline

Each stage's final JSON line is kept in its ``result.json``; a rerun with the same command skips
it. The sweep writes ``sweep.json`` (every stage's figures and command), ``sweep.md`` (the table)
and, with matplotlib, ``tradeoff.png``.
"""
import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time

import torch

from utils.cli import DATASETS, Parser
from utils.errors import BSQError, run_main
from utils.logs import write_json
from utils.plots import MissingExtra, plot_tradeoff

REPO = os.path.dirname(os.path.abspath(__file__))
RECIPE = {  # README, "The recipe"
    "train": {"epochs": 350, "lr": 0.1, "schedule": [150, 250, 325]},
    "bsq": {"epochs": 350, "lr": 0.1, "schedule": [250], "Prun_Int": 100},
    "finetune": {"epochs": 300, "lr": 0.01, "schedule": [150, 250]},
}


SPEED_FLAGS = ("--amp", "--channels-last", "--compile", "--cuda-graphs")


class StageFailed(BSQError):
    """A stage of the sweep exited with an error."""


def get_args_parser():
    parser = Parser(description="BSQ recipe for a list of alphas, with the train-from-scratch "
                    "baseline", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--decays", type=float, nargs="+", required=True, help="the alphas (--decay) to run")
    add("--epochs-scale", type=float, default=1.0,
        help="multiply every epoch count, lr milestone and --Prun_Int by this")
    add("--out", default="runs/sweep", help="folder for every stage and the sweep's tables")
    add("--float-model", default="", help="a float checkpoint: skip pretraining")
    add("-a", "--arch", default="resnet", choices=["resnet"])
    add("--depth", type=int, default=20)
    add("-d", "--dataset", default="cifar10", choices=list(DATASETS))
    add("--data-root", default="./data")
    add("--loader", default="device", choices=["device", "torchvision"])
    add("--act", type=int, default=4)
    add("--Nbits", type=int, default=8, help="precision of the BSQ starting point")
    add("--thre", type=float, default=0.0)
    add("--train-batch", type=int, default=128)
    add("--test-batch", type=int, default=100)
    add("--manualSeed", type=int, default=0, help="seed of every stage")
    for flag in SPEED_FLAGS:
        add(flag, action="store_true", help="passed to every stage (see the README's Speed)")
    return parser


def common_flags(args):
    """The flags every stage gets: model, data, seed and the speed flags given."""
    flags = ["-a", args.arch, "--depth", str(args.depth), "-d", args.dataset, "--data-root",
             os.path.abspath(args.data_root), "--loader", args.loader, "--act", str(args.act),
             "--train-batch", str(args.train_batch), "--test-batch", str(args.test_batch),
             "--manualSeed", str(args.manualSeed)]
    return flags + [f for f in SPEED_FLAGS if getattr(args, f[2:].replace("-", "_"))]


def scaled(epochs, factor):
    """``epochs * factor`` rounded half up, at least 1."""
    return max(1, math.floor(epochs * factor + 0.5))


def schedule_flags(stage, factor):
    """``--epochs --lr --schedule`` (and ``--Prun_Int`` for BSQ) of a recipe stage, scaled."""
    recipe = RECIPE[stage]
    flags = ["--epochs", str(scaled(recipe["epochs"], factor)), "--lr", str(recipe["lr"]),
             "--schedule", *(str(scaled(m, factor)) for m in recipe["schedule"]),
             "--gamma", "0.1", "--wd", "1e-4"]
    if "Prun_Int" in recipe:
        flags += ["--Prun_Int", str(scaled(recipe["Prun_Int"], factor))]
    return flags


def run_stage(name, script, flags, folder):
    """Run one stage (or reuse its ``result.json`` from a run of the same command).

    Returns its final JSON line, with the command and wall time added.
    """
    command = [sys.executable, os.path.join(REPO, script), *flags, "--checkpoint", folder]
    result_path = os.path.join(folder, "result.json")
    if os.path.isfile(result_path):
        try:
            with open(result_path) as f:
                done = json.load(f)
        except ValueError:
            done = {}  # unreadable: run the stage again
        if done.get("command") == command:
            print(f"[sweep] {name}: done before, reusing {result_path}", flush=True)
            return done
    os.makedirs(folder, exist_ok=True)
    print(f"[sweep] {name}: {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    with open(os.path.join(folder, "stdout.txt"), "w") as out, \
            open(os.path.join(folder, "stderr.txt"), "w") as err:
        proc = subprocess.run(command, cwd=REPO, stdout=out, stderr=err)
    seconds = time.perf_counter() - start
    if proc.returncode:
        with open(os.path.join(folder, "stderr.txt")) as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
        raise StageFailed(f"stage {name} exited with status {proc.returncode}: "
                          f"{lines[-1] if lines else 'no message'} (see {folder}/stderr.txt)")
    with open(os.path.join(folder, "stdout.txt")) as f:
        result = json.loads(f.read().strip().splitlines()[-1])
    result.update(command=command, seconds=round(seconds, 1))
    write_json(result, result_path)
    print(f"[sweep] {name}: {seconds:.0f} s, test accuracy {result['acc']:.2f}%, "
          f"{result['comp']:.2f}x", flush=True)
    return result


def table(sweep):
    """``sweep.md``: the run's settings and one table row per alpha."""
    cfg, epochs = sweep["config"], sweep["epochs"]
    lines = ["# BSQ sweep", "",
             f"ResNet-{cfg['depth']} on {cfg['dataset']}, act {cfg['act']}, device "
             f"{sweep['device']}, seed {cfg['manualSeed']}, epochs scale {cfg['epochs_scale']}; "
             f"epochs: pretraining {'skipped' if cfg['float_model'] else epochs['train']}, BSQ "
             f"{epochs['bsq']} (re-quantization every {epochs['Prun_Int']}), finetune "
             f"{epochs['finetune']}.",
             f"Float model {sweep['float_model']}: test accuracy {sweep['float_acc']:.2f}%.", "",
             "| alpha | avg bits | compression | BSQ acc (%) | finetuned acc (%) "
             "| from scratch acc (%) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in sweep["rows"]:
        lines.append(f"| {r['alpha']:g} | {r['avg_bits']:.3f} | {r['comp']:.2f}x | "
                     f"{r['bsq_acc']:.2f} | {r['finetune_acc']:.2f} | {r['scratch_acc']:.2f} |")
    lines += ["", "BSQ acc: the re-quantized BSQ model; finetuned: after finetuning at its "
              "scheme; from scratch: the float model converted to the same scheme, then "
              "finetuned the same way. Compression is 32 TP/TB."]
    if sweep.get("plot"):
        lines += ["", f"![accuracy vs compression]({os.path.basename(sweep['plot'])})"]
    return "\n".join(lines) + "\n"


def main(args):
    if args.epochs_scale <= 0:
        raise BSQError(f"--epochs-scale {args.epochs_scale} must be positive")
    if any(a < 0 for a in args.decays):
        raise BSQError("--decays must be non-negative")
    if args.float_model and not os.path.isfile(args.float_model):
        raise BSQError(f"--float-model {args.float_model} does not exist: check the path")
    out, factor = os.path.abspath(args.out), args.epochs_scale
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise BSQError(f"--out {args.out} cannot be created ({e.strerror})") from None
    common = common_flags(args)
    stages = {}
    float_model = os.path.abspath(args.float_model) if args.float_model else None
    if float_model is None:
        stages["train"] = run_stage("pretraining", "cifar_train.py",
                                    common + schedule_flags("train", factor),
                                    os.path.join(out, "float"))
        float_model = os.path.join(out, "float", "model_best.pth.tar")
    stages["convert"] = run_stage("8-bit conversion", "convert.py",
                                  common + ["--model", float_model, "--Nbits", str(args.Nbits)],
                                  os.path.join(out, "float-8"))
    start_model = os.path.join(out, "float-8", "model_best.pth.tar")

    runs, rows = [], []
    for alpha in args.decays:
        folder = os.path.join(out, f"alpha-{alpha:g}")
        bits = ["--Nbits", str(args.Nbits), "--bin"]
        bsq = run_stage(f"alpha {alpha:g} BSQ", "cifar_prune_STE.py", common + schedule_flags(
            "bsq", factor) + bits + ["--L1", "--decay", str(alpha), "--thre", str(args.thre),
                                     "--model", start_model], os.path.join(folder, "bsq"))
        bsq_model = os.path.join(folder, "bsq", "checkpoint.pth.tar")
        ft = run_stage(f"alpha {alpha:g} finetune", "cifar_finetune.py", common + schedule_flags(
            "finetune", factor) + bits + ["--model", bsq_model], os.path.join(folder, "finetune"))
        mp = run_stage(f"alpha {alpha:g} scratch conversion", "convert.py", common + [
            "--model", float_model, "--dict", bsq_model, "--Nbits", str(args.Nbits)],
            os.path.join(folder, "scratch"))
        mp_ft = run_stage(f"alpha {alpha:g} scratch finetune", "cifar_finetune.py", common +
                          schedule_flags("finetune", factor) + bits + [
                              "--model", os.path.join(folder, "scratch", "model_best.pth.tar")],
                          os.path.join(folder, "scratch-ft"))
        runs.append({"alpha": alpha, "bsq": bsq, "finetune": ft, "scratch": mp,
                     "scratch_finetune": mp_ft})
        rows.append({"alpha": alpha, "avg_bits": bsq["avg_bits"], "comp": bsq["comp"],
                     "bsq_acc": bsq["acc"], "finetune_acc": ft["acc"],
                     "scratch_acc": mp_ft["acc"], "scratch_before_acc": mp["acc"]})

    sweep = {"config": vars(args),
             "device": "cuda" if torch.cuda.is_available() else "cpu",
             "epochs": {"train": scaled(RECIPE["train"]["epochs"], factor),
                        "bsq": scaled(RECIPE["bsq"]["epochs"], factor),
                        "Prun_Int": scaled(RECIPE["bsq"]["Prun_Int"], factor),
                        "finetune": scaled(RECIPE["finetune"]["epochs"], factor)},
             "float_model": float_model, "float_acc": stages["convert"]["float_acc"],
             "stages": stages, "runs": runs, "rows": rows, "plot": None}
    try:
        sweep["plot"] = plot_tradeoff(rows, os.path.join(out, "tradeoff.png"), sweep["float_acc"],
                                      f"BSQ sweep, ResNet-{args.depth} on {args.dataset}")
    except MissingExtra as e:
        print(f"[sweep] no tradeoff.png: {e}", flush=True)
    write_json(sweep, os.path.join(out, "sweep.json"))
    text = table(sweep)
    with open(os.path.join(out, "sweep.md"), "w") as f:
        f.write(text)
    print(text, flush=True)
    figures = {"sweep": os.path.join(out, "sweep.json"), "table": os.path.join(out, "sweep.md"),
               "plot": sweep["plot"], "rows": rows}
    print(json.dumps(figures), flush=True)
    return figures


if __name__ == "__main__":
    run_main(main, get_args_parser())
