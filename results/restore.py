"""Lay a sweep's folder back from ``results/``, so that the sweep's command continues it.

    python results/restore.py results/NAME SWEEP_OUT

``results/collect.py`` in reverse, for a machine that lost the sweep's folder: every stage of
``results/NAME`` (its ``result.json``) is copied into ``SWEEP_OUT`` with its ``log.txt`` and
``scheme.json``, and each packed model is written back as the checkpoint it was packed from, with
the same tensors (``models.packed.unpacked_checkpoint``), so that the stages that read it go on
from it. A rerun of the sweep's command then reuses every restored stage and runs the others;
a restored stage whose checkpoint a stage still to run needs, and which was not packed (a
conversion), is run again first (``sweep.reusable``). Paths the commands record under the
published sweep's folder are moved to ``SWEEP_OUT``, and its seed is kept in ``seed.txt``; the
data and the float model must be at the paths they record (printed here), or the sweep runs
every stage anew. Nothing in ``SWEEP_OUT`` is replaced.
"""
import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from collect import PACKED, SMALL  # noqa: E402

from models.packed import unpacked_checkpoint  # noqa: E402
from sweep import SEED, run_config  # noqa: E402
from utils.store.checkpoint import save_checkpoint  # noqa: E402
from utils.store.files import atomic_write, write_json  # noqa: E402
from utils.sweep.stagejob import RESULT  # noqa: E402

START = "float-8"  # the sweep's first stage: the float model converted to 8 bits


def recorded(source, rel):
    """The ``result.json`` of the stage ``rel`` of the results folder ``source``."""
    with open(os.path.join(source, rel, RESULT)) as f:
        return json.load(f)


def moved(value, old, new):
    """``value`` with the folder ``old`` at its start replaced by ``new``."""
    if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
        return new + value[len(old):]
    return value


def recorded_out(result, rel):
    """The sweep folder a stage's ``result.json`` was written under (its ``--checkpoint``
    without the stage's own path ``rel``)."""
    command = result["command"]
    folder = command[command.index("--checkpoint") + 1]
    return folder[:-len(rel) - 1] if folder.endswith(os.sep + rel) else None


def restore_stage(source, rel, out):
    """Copy the stage ``rel`` of the results folder ``source`` into the sweep folder ``out``;
    returns the recorded sweep folder, or None when ``out`` already has the stage or ``rel``
    is not a sweep's stage."""
    dest = os.path.join(out, rel)
    if os.path.exists(os.path.join(dest, RESULT)):
        return None
    result = recorded(source, rel)
    old = recorded_out(result, rel) if "command" in result else None
    if old is None:
        return None  # not a stage of the sweep (the float model, trained before it)
    result["command"] = [moved(arg, old, out) for arg in result["command"]]
    result["checkpoint"] = moved(result.get("checkpoint"), old, out)
    os.makedirs(dest, exist_ok=True)
    packed = os.path.join(source, rel, PACKED)
    if os.path.isfile(packed):
        _, args = run_config(result["command"])
        checkpoint = os.path.join(dest, os.path.basename(result["checkpoint"]))
        if not os.path.exists(checkpoint):
            save_checkpoint(unpacked_checkpoint(packed, epoch=args.get("epochs") or 0,
                                                best_acc=result.get("best_acc"),
                                                args=argparse.Namespace(**args)), checkpoint)
    for name in SMALL:
        path = os.path.join(source, rel, name)
        if name != RESULT and os.path.isfile(path):
            shutil.copy2(path, dest)
    write_json(result, os.path.join(dest, RESULT))  # last: the stage counts as finished now
    return old


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("out")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    stages = sorted(os.path.relpath(folder, args.results)
                    for folder, _, files in os.walk(args.results) if RESULT in files)
    for rel in stages:
        print(f"{rel}: {'restored' if restore_stage(args.results, rel, out) else 'skipped'}")
    commands = [recorded(args.results, rel).get("command") or [] for rel in stages]
    seeded = [c[c.index("--manualSeed") + 1] for c in commands if "--manualSeed" in c]
    seed = os.path.join(out, SEED)  # the sweep's seed where its command gives none
    if seeded and not os.path.exists(seed):
        atomic_write(seed, f"{seeded[0]}\n")
    command = recorded(args.results, START)["command"]
    print(f"the stages read the data at {command[command.index('--data-root') + 1]} and the "
          f"float model {command[command.index('--model') + 1]}: give the sweep those")


if __name__ == "__main__":
    main()
