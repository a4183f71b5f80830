"""The README's whole recipe for a list of alphas (or budgets), with the train-from-scratch
baseline at each.

    python sweep.py --decays 0.005 0.01 0.02 --data-root data --out runs/sweep
    python sweep.py --decays 0.005 0.01 --epochs-scale 0.01 --float-model CKPT --out runs/short
    python sweep.py --decays 0.002 0.005 0.01 0.02 --float-model CKPT --jobs 4   # 4 at once
    python sweep.py --decays 0.005 0.01 0.02 --launcher slurm --partition gpu --time 240
    python sweep.py -a resnet50 -d imagenet --data-root /data/imagenet --decays 0.005 0.01 \
        --float-model resnet50-0676ba61.pth --gpus-per-job 2 --out runs/imagenet

Stages, each a job (``utils/sweep/launchers.py``) running a script with the recipe's hyperparameters
(epoch counts, lr milestones and ``--Prun_Int`` multiplied by ``--epochs-scale``, rounded, at
least 1), each in its own folder under ``--out`` with its ``stdout.txt``/``stderr.txt``. The
recipe is the dataset's (``utils/recipe.py``: CIFAR's, or ImageNet's for ``-d imagenet``), its
batch split over a stage's torchrun ranks unless ``--train-batch`` (per process) is given:

    float/               cifar_train.py (skipped with --float-model)
    float-8/             convert.py --Nbits 8
    alpha-A/bsq/         cifar_prune_STE.py --decay A --bin --L1
    alpha-A/finetune/    cifar_finetune.py of the BSQ result
    alpha-A/scratch/     convert.py --dict: the float model at BSQ's scheme
    alpha-A/scratch-ft/  cifar_finetune.py of that, the "train from scratch" baseline (both
                         left out with --no-scratch)
    target-K-V/...       the same four for --targets V (--target-kind K): BSQ to that budget
    uniform-N/convert/   convert.py --Nbits N (with --uniform N ...): the paper's uniform baseline
    uniform-N/finetune/  cifar_finetune.py of that, as long as BSQ's models are finetuned

A stage is submitted as soon as its inputs are ready: ``--launcher local`` (the default) runs up
to ``--jobs K`` at once on this machine, job slot i on GPU ``i % #GPUs`` when GPUs are visible
(its own ``CUDA_VISIBLE_DEVICES``), so K above the GPU count shares GPUs (a launch-bound BSQ step
leaves most of a GPU idle); ``--launcher slurm`` submits each stage as a SLURM job with the
launcher flags' resources, requeued and resumed when preempted or at its time limit. While stages
run, a status line per stage (its epoch and time left) appears every ``--progress`` seconds.
Ctrl-C cancels the running jobs; they keep their last checkpoint.

Each stage's final JSON line is kept in its ``result.json``; a rerun of the same command skips
finished stages, follows the jobs still running and resumes interrupted stages from their last
checkpoint (without ``--manualSeed``, the seed drawn at the first run is kept in ``seed.txt``);
a finished stage whose checkpoint is gone is run again when a stage still to run reads it
(``results/restore.py`` lays a sweep's folder back from its published files).
The sweep writes ``sweep.json`` (every stage's figures and command), ``sweep.md`` (the table) and,
with matplotlib, ``tradeoff.png``; ``tensorboard --logdir OUT`` shows every training stage.
"""
import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, replace

import cifar_finetune
import cifar_prune_STE
import cifar_train
import convert
from models import arch_title, model_config, model_flags
from utils.cli.errors import run_main
from utils.cli.flags import (
    TRAIN_BATCH,
    Parser,
    add_bit_flags,
    add_corrected_flag,
    add_data_flags,
    add_output_flags,
    add_seed_flags,
    add_speed_flags,
    add_threshold_flag,
    number,
)
from utils.errors import BSQError
from utils.quant.bits import MAX_BITS
from utils.recipe import RECIPE, recipe_for
from utils.report.console import times
from utils.report.plots import MissingExtra, plot_tradeoff
from utils.store.files import atomic_write, json_text, write_json
from utils.sweep.launchers import Resources, add_launcher_flags, make_launcher
from utils.sweep.stagejob import RESULT

REPO = os.path.dirname(os.path.abspath(__file__))
# The scripts of the stages, each by its parser; the sweep's flag groups they share.
SCRIPTS = {"cifar_train.py": cifar_train.get_args_parser,
           "cifar_prune_STE.py": cifar_prune_STE.get_args_parser,
           "cifar_finetune.py": cifar_finetune.get_args_parser,
           "convert.py": convert.get_args_parser}
FORWARDED = ("model", "data", "run", "speed", "output")
TARGET_KINDS = ("compression", "bits", "bops")
POLL_S = 0.2
PRINTING_ONLY = ("progress",)  # flags that change what a stage prints, not what it computes
SEED = "seed.txt"  # in --out: the seed drawn at a sweep's first run without --manualSeed


@dataclass
class Stage:
    name: str  # e.g. "alpha 0.01 BSQ"
    script: str
    flags: list
    folder: str
    after: tuple = ()  # stages whose results it needs
    resumable: bool = True  # a training script: an interrupted run continues with --resume

    def command(self):
        return [sys.executable, os.path.join(REPO, self.script), *self.flags,
                "--checkpoint", self.folder]

    def same_run(self, command):
        """Whether ``command`` (as an earlier sweep recorded it) runs this stage: the same script
        with the same values of its flags, however spelled or ordered."""
        try:
            return run_config(command) == run_config(self.command())
        except (ValueError, KeyError, TypeError, IndexError):
            return False  # unreadable: run the stage (again)


def get_args_parser(add_help=True):
    parser = Parser(description="BSQ recipe for a list of alphas, with the train-from-scratch "
                    "baseline", add_help=add_help)
    group = parser.group("sweep")
    group.add_argument("--decays", type=number(float, 0), nargs="+", default=[],
                       help="the alphas (--decay) to run")
    group.add_argument("--targets", type=number(float, 0, lo_open=True), nargs="+", default=[],
                       help="budgets to run BSQ to, in place of alphas (--target-KIND V each)")
    group.add_argument("--target-kind", choices=TARGET_KINDS, default="compression",
                       help="what --targets are: compression (x), average bits or GBOPs")
    group.add_argument("--epochs-scale", type=number(float, 0, lo_open=True), default=1.0,
                       help="multiply every epoch count, lr milestone and --Prun_Int by this")
    group.add_argument("--out", default="runs/sweep", help="folder for every stage and the tables")
    group.add_argument("--float-model", default="", help="a float checkpoint: skip pretraining")
    group.add_argument("--scratch", action=argparse.BooleanOptionalAction, default=True,
                       help="the train-from-scratch baseline at each BSQ result's scheme")
    group.add_argument("--uniform", type=number(int, 1, MAX_BITS), nargs="+", default=[],
                       metavar="N", help="uniform baselines: the float model converted to N "
                       "bits for each N, then finetuned as BSQ's models are")
    add_bit_flags(parser, nbits_help="precision of the BSQ starting point", nbits=MAX_BITS)
    add_threshold_flag(parser)
    add_corrected_flag(parser)
    add_seed_flags(parser, seed_help="seed of every stage (drawn at the first run when not "
                                     "given, and kept in --out's seed.txt)")
    parser.add_flags("model", model_flags())
    add_data_flags(parser)
    add_speed_flags(parser)
    add_output_flags(parser)
    add_launcher_flags(parser)
    parser.set_defaults(train_batch=None)  # the recipe's batch (train_batch)
    return parser


def forwarded(args, script):
    """The command line that passes ``script`` every flag of the sweep's ``FORWARDED`` groups
    it takes too, as the sweep's ``args`` hold them: the network and its flags, the data, seed,
    speed and output flags, and ``--corrected`` where the script has it."""
    parser, takes = get_args_parser(), set(SCRIPTS[script]().dests())
    return parser.spell(args, [d for d in parser.dests(FORWARDED) if d in takes])


def train_batch(args, resources):
    """``--train-batch`` as given, or the recipe's batch of one step shared by a stage's torchrun
    ranks (ImageNet's 256: 128 on each of 2 GPUs), or else the flag's default in each rank."""
    batch, world = recipe_for(args.dataset)["bsq"].batch, resources.processes * resources.nodes
    if args.train_batch is not None or batch is None:
        return args.train_batch or TRAIN_BATCH
    if batch % world:
        raise BSQError(f"the recipe's batch {batch} does not split over {world} processes: "
                       "give --train-batch (per process)")
    return batch // world


def scaled(epochs, factor):
    """``epochs * factor`` rounded half up, at least 1."""
    return max(1, math.floor(epochs * factor + 0.5))


def schedule_flags(stage, factor, recipe=RECIPE):
    """``--epochs --lr --schedule --gamma --wd`` (and ``--Prun_Int`` for BSQ) of a stage of
    ``recipe`` (``recipe_for`` the dataset), scaled by ``factor``."""
    recipe = recipe[stage]
    flags = ["--epochs", str(scaled(recipe.epochs, factor)), "--lr", str(recipe.lr),
             "--schedule", *(str(scaled(m, factor)) for m in recipe.schedule),
             "--gamma", "0.1", "--wd", str(recipe.wd)]
    if recipe.prun_int:
        flags += ["--Prun_Int", str(scaled(recipe.prun_int, factor))]
    return flags


def plan(args, out):
    """The stages of the sweep, in an order that respects their inputs, and the float model.

    Stages start in this order as job slots free: every BSQ run, then their finetunes, then the
    train-from-scratch baselines and the uniform ones, so a sweep stopped early has its method's
    points."""
    pretrain, bsq_run, finetune, convert = (forwarded(args, script) for script in SCRIPTS)
    schedule = {stage: schedule_flags(stage, args.epochs_scale, recipe_for(args.dataset))
                for stage in ("train", "bsq", "finetune")}
    bits = ["--Nbits", str(args.Nbits), "--bin"]
    stages = []
    float_model = os.path.abspath(args.float_model) if args.float_model else None
    first = ()
    if float_model is None:
        stages.append(Stage("pretraining", "cifar_train.py", pretrain + schedule["train"],
                            os.path.join(out, "float")))
        float_model, first = os.path.join(out, "float", "model_best.pth.tar"), ("pretraining",)
    stages.append(Stage("8-bit conversion", "convert.py", convert + ["--model", float_model,
                        "--Nbits", str(args.Nbits)], os.path.join(out, "float-8"), first, False))
    start = os.path.join(out, "float-8", "model_best.pth.tar")
    bsq_stages, finetunes, baselines = [], [], []
    for point in points(args):
        folder, a = os.path.join(out, point["folder"]), point["name"]
        bsq = os.path.join(folder, "bsq", "checkpoint.pth.tar")
        scratch = os.path.join(folder, "scratch", "model_best.pth.tar")
        bsq_stages.append(
            Stage(f"{a} BSQ", "cifar_prune_STE.py", bsq_run + schedule["bsq"] + bits
                  + ["--L1", *point["flags"], "--thre", str(args.thre), "--model", start],
                  os.path.join(folder, "bsq"), ("8-bit conversion",)))
        finetunes.append(
            Stage(f"{a} finetune", "cifar_finetune.py", finetune + schedule["finetune"]
                  + bits + ["--model", bsq], os.path.join(folder, "finetune"), (f"{a} BSQ",)))
        if args.scratch:
            baselines += [
                Stage(f"{a} scratch conversion", "convert.py", convert + ["--model", float_model,
                      "--dict", bsq, "--Nbits", str(args.Nbits)],
                      os.path.join(folder, "scratch"), (f"{a} BSQ",), False),
                Stage(f"{a} scratch finetune", "cifar_finetune.py", finetune
                      + schedule["finetune"] + bits + ["--model", scratch],
                      os.path.join(folder, "scratch-ft"), (f"{a} scratch conversion",))]
    stages += bsq_stages + finetunes + baselines  # the method's own results first
    for n in args.uniform:
        folder, u = os.path.join(out, f"uniform-{n}"), f"uniform {n}-bit"
        converted = os.path.join(folder, "convert", "model_best.pth.tar")
        stages += [
            Stage(f"{u} conversion", "convert.py", convert + ["--model", float_model, "--Nbits",
                  str(n)], os.path.join(folder, "convert"), first, False),
            Stage(f"{u} finetune", "cifar_finetune.py", finetune + schedule["finetune"]
                  + ["--Nbits", str(n), "--bin", "--model", converted],
                  os.path.join(folder, "finetune"), (f"{u} conversion",))]
    return stages, float_model


def points(args):
    """The BSQ runs of the sweep, one per alpha of ``--decays`` and per budget of ``--targets``:
    ``{"alpha" | "target", "name", "folder", "flags"}`` (the BSQ stage's own flags)."""
    runs = [{"alpha": a, "target": None, "name": f"alpha {a:g}", "folder": f"alpha-{a:g}",
             "flags": ["--decay", str(a)]} for a in args.decays]
    kind = args.target_kind
    return runs + [{"alpha": None, "target": f"{kind} {v:g}", "name": f"target {kind} {v:g}",
                    "folder": f"target-{kind}-{v:g}", "flags": [f"--target-{kind}", f"{v:g}"]}
                   for v in args.targets]


def finished(stage):
    """The stage's ``result.json`` when a run of the same command wrote it (the same script and
    the same values of its flags, however spelled or ordered), else None."""
    try:
        with open(os.path.join(stage.folder, RESULT)) as f:
            done = json.load(f)
    except (OSError, ValueError):
        return None  # missing or unreadable: run the stage (again)
    return done if isinstance(done, dict) and stage.same_run(done.get("command")) else None


def reusable(stages):
    """``{name: result}`` of the stages an earlier run finished that this run can reuse.

    A finished stage is run again, whole, when a stage still to run reads a file of its folder
    that is gone (a checkpoint deleted, or a sweep laid back from ``results/`` without it)."""
    done = {s.name: r for s in stages if (r := finished(s)) is not None}
    for stage in reversed(stages):  # a stage's readers come after it in the plan
        needed = [flag for reader in stages if stage.name in reader.after
                  and reader.name not in done for flag in reader.flags
                  if flag.startswith(stage.folder + os.sep)]
        if stage.name in done and not all(os.path.isfile(path) for path in needed):
            del done[stage.name]
    return done


def run_config(command):
    """``(script, flag values)`` of a stage's command line, as its script parses it, but for
    ``PRINTING_ONLY``; ValueError for one it does not take."""
    script = os.path.basename(command[1])
    try:
        values = vars(SCRIPTS[script]().parse_args(command[2:]))
    except SystemExit:
        raise ValueError(f"{script} does not take {command[2:]}") from None
    return script, {k: v for k, v in values.items() if k not in PRINTING_ONLY}


def run_stages(stages, launcher, every):
    """Run ``stages`` through ``launcher``, each when the stages it needs are done.

    Finished stages are reused (``reusable``) and jobs an earlier run left running are
    followed. Returns ``{name: result}``. A failure cancels the other running jobs (they keep
    their last checkpoint and resume on the next run) and raises ``StageFailed``; so does an
    interrupt of the sweep itself.
    """
    results, pending, running, reused = {}, list(stages), [], reusable(stages)
    jobs, last_status = launcher.resources.jobs or len(stages), time.monotonic()
    try:
        while pending or running:
            for stage in [s for s in pending if all(d in results for d in s.after)]:
                if stage.name in reused:
                    print(f"[sweep] {stage.name}: done before, reusing its result.json",
                          flush=True)
                    results[stage.name] = reused[stage.name]
                elif (run := launcher.attach(stage)) is not None:
                    running.append(run)
                elif len(running) < jobs:
                    slot = min(set(range(jobs)) - {r.slot for r in running})
                    gone = finished(stage) is not None  # its files are gone: redone whole
                    running.append(launcher.submit(replace(stage, resumable=False) if gone
                                                   else stage, slot))
                else:
                    continue
                pending.remove(stage)
            for run in [r for r in running if r.done()]:
                running.remove(run)
                results[run.stage.name] = run.result()
            if running and every and time.monotonic() - last_status >= every:
                last_status = time.monotonic()
                for run in running:
                    print(run.status(), flush=True)
            if running:
                time.sleep(POLL_S)
    finally:
        launcher.cancel(running)
    return results


def table(sweep):
    """``sweep.md``: the run's settings and one table row per alpha."""
    cfg, epochs = sweep["config"], sweep["epochs"]
    lines = ["# BSQ sweep", "",
             f"{sweep['network']} on {cfg['dataset']}, act {cfg['act']}, device "
             f"{sweep['device']}, seed {cfg['manualSeed']}, epochs scale {cfg['epochs_scale']}; "
             f"epochs: pretraining {'skipped' if cfg['float_model'] else epochs['train']}, BSQ "
             f"{epochs['bsq']} (re-quantization every {epochs['Prun_Int']}), finetune "
             f"{epochs['finetune']}.",
             f"Float model {sweep['float_model']}: test accuracy {sweep['float_acc']:.2f}%.", "",
             "| alpha | avg bits | compression | GBOPs | BSQ acc (%) | finetuned acc (%) "
             "| from scratch acc (%) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in sweep["rows"]:
        lines.append(f"| {point_label(r)} | {r['avg_bits']:.3f} | {times(r['comp'])} | "
                     f"{gbops(r.get('bops'))} | {r['bsq_acc']:.2f} | "
                     f"{r['finetune_acc']:.2f} | {percent(r['scratch_acc'])} |")
    lines += ["", "BSQ acc: the re-quantized BSQ model; finetuned: after finetuning at its "
              "scheme; from scratch: the float model converted to the same scheme, then "
              "finetuned the same way. Compression is 32 TP/TB; GBOPs: bit-operations of one "
              "image's forward pass (MACs x weight bits x activation bits, every conv and "
              "linear), of the finetuned model. A target row: BSQ to that budget, alpha set "
              "during training (its last value given)."]
    lines += ["", "| uniform bits | avg bits | compression | GBOPs | converted acc (%) "
              "| finetuned acc (%) |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for u in sweep["uniform"]:
        lines.append(f"| {u['bits']} | {u['avg_bits']:.3f} | {times(u['comp'])} | "
                     f"{gbops(u.get('bops'))} | {u['convert_acc']:.2f} | "
                     f"{percent(u['finetune_acc'])} |")
    lines += ["", f"Uniform: the float model converted to every layer at that precision (the "
              f"{sweep['config']['Nbits']}-bit row is BSQ's starting point, not finetuned), "
              "then finetuned as BSQ's models are."]
    if sweep.get("plot"):
        lines += ["", f"![accuracy vs compression]({os.path.basename(sweep['plot'])})"]
    return "\n".join(lines) + "\n"


def point_label(row):
    """A row's first cell: its alpha, or its target and the alpha it ended at."""
    if row.get("target") is None:
        return f"{row['alpha']:g}"
    return f"{row['target']} (alpha {row['end_alpha']:.3g})"


def percent(acc):
    """An accuracy for the table ("" for a stage the sweep did not run)."""
    return "" if acc is None else f"{acc:.2f}"


def gbops(bops):
    """Bit-operations in billions for the table ("" where a stage did not count them)."""
    return "" if bops is None else f"{bops / 1e9:.3f}"


def sweep_seed(out):
    """The seed of a sweep run without ``--manualSeed``: drawn at its first run and kept in
    ``<out>/seed.txt``, so that a rerun of the same command reuses and resumes its stages."""
    path = os.path.join(out, SEED)
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        seed = random.randint(1, 10000)
        atomic_write(path, f"{seed}\n")
        return seed


def main(args):
    model_config(args)  # the architecture and its flags, checked before any work
    if not (args.decays or args.targets):
        raise BSQError("sweep.py needs --decays (alphas) or --targets (budgets): give one")
    if args.float_model and not os.path.isfile(args.float_model):
        raise BSQError(f"--float-model {args.float_model} does not exist: check the path")
    resources = Resources.from_args(args)
    args.train_batch = train_batch(args, resources)
    launcher = make_launcher(resources)
    out, args.data_root = os.path.abspath(args.out), os.path.abspath(args.data_root)
    os.makedirs(out, exist_ok=True)
    if args.manualSeed is None:
        args.manualSeed = sweep_seed(out)
    stages, float_model = plan(args, out)
    results = run_stages(stages, launcher, args.progress)
    rows, runs = [], []
    for point in points(args):
        a, who = point["name"], {"alpha": point["alpha"], "target": point["target"]}
        bsq, ft = results[f"{a} BSQ"], results[f"{a} finetune"]
        scratch = results.get(f"{a} scratch conversion")
        scratch_ft = results.get(f"{a} scratch finetune")
        runs.append({**who, "bsq": bsq, "finetune": ft, "scratch": scratch,
                     "scratch_finetune": scratch_ft})
        rows.append({**who, "end_alpha": bsq.get("alpha", point["alpha"]),
                     "avg_bits": bsq["avg_bits"], "comp": bsq["comp"],
                     "bops": ft.get("bops"), "bsq_acc": bsq["acc"], "finetune_acc": ft["acc"],
                     "scratch_acc": scratch_ft and scratch_ft["acc"],
                     "scratch_before_acc": scratch and scratch["acc"]})
    start = results["8-bit conversion"]
    uniform = [{"bits": args.Nbits, "avg_bits": start["avg_bits"], "comp": start["comp"],
                "bops": start.get("bops"), "convert_acc": start["acc"],
                "finetune_acc": None}]  # BSQ's starting point
    for n in args.uniform:
        converted, ft = results[f"uniform {n}-bit conversion"], results[f"uniform {n}-bit finetune"]
        uniform.append({"bits": n, "avg_bits": ft["avg_bits"], "comp": ft["comp"],
                        "bops": ft.get("bops"), "convert_acc": converted["acc"],
                        "finetune_acc": ft["acc"]})
    factor, recipe = args.epochs_scale, recipe_for(args.dataset)
    sweep = {"config": vars(args), "network": arch_title(args),
             "device": launcher.device(),
             "epochs": {"train": scaled(recipe["train"].epochs, factor),
                        "bsq": scaled(recipe["bsq"].epochs, factor),
                        "Prun_Int": scaled(recipe["bsq"].prun_int, factor),
                        "finetune": scaled(recipe["finetune"].epochs, factor)},
             "float_model": float_model, "float_acc": results["8-bit conversion"]["float_acc"],
             "stages": {k: v for k, v in results.items() if k in ("pretraining",
                                                                  "8-bit conversion")},
             "runs": runs, "rows": rows, "uniform": uniform, "plot": None}
    try:
        sweep["plot"] = plot_tradeoff(rows, os.path.join(out, "tradeoff.png"), sweep["float_acc"],
                                      f"BSQ sweep, {sweep['network']} on {args.dataset}",
                                      uniform=uniform)
    except MissingExtra as e:
        print(f"[sweep] no tradeoff.png: {e}")
    write_json(sweep, os.path.join(out, "sweep.json"))
    text = table(sweep)
    atomic_write(os.path.join(out, "sweep.md"), text)
    print(text)
    figures = {"sweep": os.path.join(out, "sweep.json"), "table": os.path.join(out, "sweep.md"),
               "plot": sweep["plot"], "rows": rows, "uniform": uniform}
    print(json_text(figures))
    return figures


def interrupted(args):
    return ("interrupted; the running stages' jobs were cancelled and kept their last checkpoint: "
            "run the same command again to reuse the finished stages and resume the others")


if __name__ == "__main__":
    run_main(main, get_args_parser(), interrupted=interrupted)
