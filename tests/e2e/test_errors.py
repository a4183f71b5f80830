"""Bad input, for each of the seven entry points, ends in one line on stderr naming the problem,
exit status 2, no traceback, and nothing on disk changed: every case runs in a folder of valid
and damaged checkpoints, data and earlier runs, which must be byte-identical afterwards.

Cases run in this process through the scripts' own ``run_main`` (the error boundary), with every
warning shown; ``test_the_real_interpreter_agrees`` repeats some as real subprocesses.
"""
import argparse
import contextlib
import importlib
import io
import os
import pickle
import shutil
import warnings

import pytest
import torch

from utils.cli.errors import run_main
from utils.store.checkpoint import checkpoint_state, save_checkpoint
from utils.store.epochlog import COLUMNS
from utils.store.packedfile import PREFIX

from helpers import REPO, malicious_checkpoint, resnet, run_script

WRITE = "--checkpoint protected --overwrite"  # validation must precede any write, even so


def _save(model, path, **fields):
    save_checkpoint(checkpoint_state(model, **fields), str(path))


@pytest.fixture(scope="module")
def world(tmp_path_factory, cifar10_root):
    """A folder with data, valid and damaged checkpoints, and earlier runs to protect."""
    root = tmp_path_factory.mktemp("errors")
    shutil.copytree(cifar10_root, root / "data")
    bits = resnet(depth=8).to_bits_(8)
    _save(bits, root / "bits8.pth.tar")
    _save(resnet(depth=8), root / "float8.pth.tar")
    _save(resnet(depth=14), root / "float14.pth.tar")
    _save(resnet(depth=8, num_classes=100).to_bits_(8), root / "c100.pth.tar")
    _save(resnet(depth=8, act=2).to_bits_(8), root / "pact.pth.tar")
    _save(bits, root / "nanacc.pth.tar", acc=float("nan"), best_acc=float("nan"))
    damaged = resnet(depth=8).to_bits_(8)
    with torch.no_grad():
        damaged.layer1[0].conv2.scale.fill_(float("nan"))
    _save(damaged, root / "nan.pth.tar")
    wrong = checkpoint_state(bits)
    wrong["Nbit_dict"]["conv1"] = [6, 0]
    torch.save(wrong, root / "wrongplanes.pth.tar")
    (root / "notes.pth.tar").write_text("not a checkpoint\n")
    good = (root / "bits8.pth.tar").read_bytes()
    (root / "half.pth.tar").write_bytes(good[: len(good) // 2])
    with open(root / "raw.pth.tar", "wb") as f:
        pickle.dump({"state_dict": {"conv1.weight": [0.0]}}, f)
    malicious_checkpoint(root / "poison.pth.tar", root / "pwned")
    (root / "bad_nets.py").write_text(
        "import torch.nn as nn\n\n\n"
        "def fixed(num_classes=10):  # ignores num_classes\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 7))\n\n\n"
        "def big(num_classes=10):  # made for 64x64 images\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, num_classes))\n")
    torch.save(torch.nn.Linear(3, 4).state_dict(), root / "bare.pth")  # another network's
    (root / "afile").write_text("")
    (root / "nothing_here").mkdir()
    for name, cut in (("corrupt", 100), ("empty", None)):
        shutil.copytree(cifar10_root, root / name)
        batch = root / name / "cifar-10-batches-py" / "test_batch"
        if cut:
            batch.write_bytes(batch.read_bytes()[:cut])
        else:
            with open(batch, "wb") as f:
                pickle.dump({"data": torch.zeros(0, 3072, dtype=torch.uint8).numpy(),
                             "labels": []}, f)
    for name in ("protected", "badlog", "recorded", "negvar", "finetuned"):
        (root / name).mkdir()
    _save(bits, root / "protected" / "checkpoint.pth.tar")
    shutil.copy(root / "bits8.pth.tar", root / "protected" / "model_best.pth.tar")
    (root / "protected" / "log.txt").write_text("\t".join(COLUMNS) + "\n")
    _save(bits.to_finetune_(), root / "badlog" / "checkpoint.pth.tar", epoch=1)
    (root / "badlog" / "log.txt").write_text("\t".join(COLUMNS) + "\ngarbage\n")
    _save(bits, root / "finetuned" / "checkpoint.pth.tar", epoch=1)
    (root / "finetuned" / "log.txt").write_text("\t".join(COLUMNS) + "\n")
    flags = argparse.Namespace(decay=0.01, lr=0.1, L1=True, Prun_Int=100, depth=8,
                               model="bits8.pth.tar")
    _save(resnet(depth=8).to_bits_(8), root / "recorded" / "checkpoint.pth.tar", epoch=3,
          args=flags)
    negvar = resnet(depth=8)
    for m in negvar.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(-1.0)  # finite, but the test pass takes its square root
    _save(negvar, root / "negvar" / "checkpoint.pth.tar")
    exported = root / "model.bsq"
    from models.packed import pack
    pack(resnet(depth=8).to_bits_(4), str(exported))
    data = bytearray(exported.read_bytes())
    data[PREFIX.size + 100] ^= 0x01  # one flipped bit in the header
    (root / "damaged.bsq").write_bytes(bytes(data))
    return root


CASES = [  # (script, arguments, words the one line must contain)
    ("cifar_finetune.py", "--model missing.pth.tar --bin --evaluate", "does not exist"),
    ("cifar_finetune.py", "--model protected --bin --evaluate", "is a folder"),
    ("cifar_finetune.py", "--model notes.pth.tar --bin --evaluate", "not a readable"),
    ("cifar_finetune.py", "--model half.pth.tar --bin --evaluate", "not a readable"),
    ("cifar_finetune.py", "--model poison.pth.tar --bin --evaluate", "refused"),
    ("cifar_finetune.py", "--model raw.pth.tar --bin --evaluate", "plain pickle"),
    ("cifar_finetune.py", "--model nan.pth.tar --bin --evaluate",
     "non-finite values in layer1.0.conv2.scale"),
    ("cifar_finetune.py", "--model nanacc.pth.tar --bin --evaluate", "non-finite acc"),
    ("cifar_finetune.py", "--model wrongplanes.pth.tar --bin --evaluate",
     "conv1.pweight: file (16, 3, 3, 3, 8) vs model (16, 3, 3, 3, 6)"),
    ("cifar_finetune.py", "--depth 14 --model bits8.pth.tar --bin --evaluate", "--depth 8"),
    ("cifar_train.py", f"--model bare.pth {WRITE}", "or pass -a and the flags of the network"),
    ("cifar_finetune.py", "--model c100.pth.tar --bin --evaluate", "100 classes"),
    ("cifar_finetune.py", "--model pact.pth.tar --bin --evaluate", "--act 2"),
    ("cifar_finetune.py", "--model float8.pth.tar --bin --evaluate", "drop --bin"),
    ("cifar_finetune.py", "--model bits8.pth.tar --evaluate", "add --bin"),
    ("cifar_finetune.py", "--bin --evaluate", "needs --model"),
    ("cifar_finetune.py", f"--model bits8.pth.tar --bin --epochs 0 {WRITE}", "--epochs: 0"),
    ("cifar_finetune.py", f"--model bits8.pth.tar --bin --momentum -1 {WRITE}", "--momentum"),
    ("cifar_finetune.py", f"--model bits8.pth.tar --bin --gamma -0.1 {WRITE}", "--gamma"),
    ("cifar_finetune.py", f"--model bits8.pth.tar --bin --start-epoch 5 --epochs 2 {WRITE}",
     "--start-epoch 5 is not below --epochs 2"),
    ("cifar_finetune.py", "--model bits8.pth.tar --bin --checkpoint protected",
     "already holds a run"),
    ("cifar_finetune.py", "--bin --resume badlog/checkpoint.pth.tar --checkpoint badlog",
     "damaged at line 2"),
    ("cifar_prune_STE.py", "--bin --L1 --Prun_Int 7 --resume recorded/checkpoint.pth.tar "
                           "--checkpoint recorded", "made with --Prun_Int 100, not --Prun_Int 7"),
    ("cifar_prune_STE.py", "--bin --L1 --Prun_Int 100 --resume recorded/checkpoint.pth.tar "
                           "--checkpoint recorded --epochs 2", "more than --epochs 2"),
    ("cifar_prune_STE.py", "--bin --L1 --Prun_Int 100 --model float8.pth.tar --resume "
                           "recorded/checkpoint.pth.tar --checkpoint recorded",
     "made with --model bits8.pth.tar, not --model float8.pth.tar"),
    ("cifar_prune_STE.py", "--bin --L1 --resume finetuned/checkpoint.pth.tar --checkpoint "
                           "finetuned", "is a finetune run's checkpoint: resume it with "
                                        "cifar_finetune.py"),
    ("cifar_finetune.py", "--bin --resume recorded/checkpoint.pth.tar --checkpoint recorded "
                          "--epochs 5",
     "is a bit-representation (BSQ) run's checkpoint: resume it with cifar_prune_STE.py"),
    ("convert.py", f"--depth 14 --model float14.pth.tar --dict bits8.pth.tar {WRITE}",
     "no scheme for layers"),
    ("convert.py", f"--model bits8.pth.tar {WRITE}", "already a bits model"),
    ("convert.py", f"--Nbits 9 --model float8.pth.tar {WRITE}", "--Nbits: 9 is not in 1..8"),
    ("convert.py", WRITE, "needs --model"),
    ("convert.py", "--model float8.pth.tar --checkpoint protected", "already holds a run"),
    ("convert.py", "--model float8.pth.tar --checkpoint afile/sub", "is a file, not a folder"),
    ("cifar_prune_STE.py", f"--Nbits 0 {WRITE}", "--Nbits: 0"),
    ("cifar_prune_STE.py", f"--act 9 {WRITE}", "--act: 9"),
    ("cifar_prune_STE.py", f"--depth 21 {WRITE}", "6n+2"),
    ("cifar_prune_STE.py", f"--lr -0.1 {WRITE}", "--lr/--learning-rate: -0.1 is not >= 0"),
    ("cifar_prune_STE.py", f"--decay -1 {WRITE}", "--decay: -1"),
    ("cifar_prune_STE.py", f"--dataset mnist {WRITE}", "invalid choice"),
    ("cifar_prune_STE.py", f"--loader magic {WRITE}", "invalid choice"),
    ("cifar_prune_STE.py", f"--act four {WRITE}", "'four' is not an integer"),
    ("cifar_prune_STE.py", f"--thre 150 {WRITE}", "--thre: 150"),
    ("cifar_prune_STE.py", f"-j -1 {WRITE}", "--workers: -1"),
    ("cifar_prune_STE.py", f"--Prun_Int -1 {WRITE}", "--Prun_Int: -1"),
    ("cifar_prune_STE.py", f"-a vgg19bn {WRITE}", "did you mean vgg19_bn?"),
    ("cifar_prune_STE.py", f"-a nowhere.py:net {WRITE}", "nowhere.py does not exist"),
    ("cifar_prune_STE.py", f"-a senet.py {WRITE}", "-a senet.py:FACTORY"),
    ("cifar_train.py", "-a bad_nets.py:fixed --checkpoint fixed", "must use its num_classes"),
    ("cifar_train.py", f"-a {os.path.join(REPO, 'tests', 'nets.py')}:untraceable --checkpoint u",
     "cannot trace the network's forward pass in train mode"),
    ("cifar_prune_STE.py", "-a bad_nets.py:big --checkpoint big", "cannot run on the data's 32x32"),
    ("cifar_prune_STE.py", f"-a preresnet --depth 29 {WRITE}", "--block-name Bottleneck"),
    ("cifar_prune_STE.py", f"--block-name Bottleneck {WRITE}", "use --block-name BasicBlock"),
    ("cifar_prune_STE.py", f"--manualSeed -1 {WRITE}", "--manualSeed: -1"),
    ("cifar_prune_STE.py", f"--schedule 5 -5 {WRITE}", "--schedule: -5"),
    ("cifar_prune_STE.py", f"--data-root nowhere/data {WRITE}", "cifar-10-batches-py"),
    ("cifar_prune_STE.py", f"--data-root corrupt {WRITE}", "test_batch"),
    ("cifar_prune_STE.py", f"--data-root empty {WRITE}", "holds no images"),
    ("cifar_prune_STE.py", "--checkpoint afile/sub", "is a file, not a folder"),
    ("cifar_prune_STE.py", f"--model float8.pth.tar --bin {WRITE}", "drop --bin"),
    ("cifar_prune_STE.py", f"--model bits8.pth.tar --bin --act 0 {WRITE}", "pass --act 4"),
    ("cifar_finetune.py", "--model bits8.pth.tar --bin --act 8 --evaluate", "pass --act 4"),
    ("cifar_prune_STE.py", "--lr 1e30 --decay 1e30 --L1 --bin --resume "
                           "protected/checkpoint.pth.tar --checkpoint protected",
     "--resume protected/checkpoint.pth.tar"),
    # no epoch saved yet: the advice is to run again, and the new folder does not stay behind
    ("cifar_prune_STE.py", "--lr 1e30 --decay 1e30 --L1 --model bits8.pth.tar --bin "
                           "--checkpoint fresh", "run again: no epoch had finished"),
    ("cifar_train.py", f"--model bits8.pth.tar {WRITE}", "cifar_finetune.py"),
    ("cifar_train.py", "--lr 0 --resume negvar/checkpoint.pth.tar --checkpoint negvar",
     "test loss became non-finite"),
    ("export.py", "", "either"),
    ("export.py", "--export new.bsq", "--export needs --model"),
    ("export.py", "--model float8.pth.tar --export new.bsq", "float model"),
    ("export.py", "--model bits8.pth.tar --export model.bsq", "already exists"),
    ("export.py", "--load damaged.bsq", "CRC-32"),
    ("export.py", "--load notes.pth.tar", "not a packed BSQ model"),
    ("export.py", "--load missing.bsq", "does not exist"),
    ("export.py", "--model bits8.pth.tar --export afile/m.bsq", "is a file, not a folder"),
    ("export.py", "--onnx new.onnx", "--onnx needs --model"),
    ("export.py", "--model float8.pth.tar --onnx new.onnx", "float model"),
    ("export.py", "--model bits8.pth.tar --onnx notes.pth.tar", "already exists"),
    ("export.py", "--model bits8.pth.tar --onnx afile/m.onnx", "is a file, not a folder"),
    ("export.py", "--model bits8.pth.tar --onnx new.onnx --export new.bsq", "either"),
    ("export.py", "--model c100.pth.tar --onnx new.onnx", "100"),
    ("plots.py", "nowhere", "is not a folder"),
    ("plots.py", "nothing_here", "has no scheme.json"),
    ("plots.py", "protected --out afile/sub", "Not a directory"),
    ("sweep.py", "--decays -1", "--decays: -1"),
    ("sweep.py", "--decays 0.1 --epochs-scale 0", "--epochs-scale: 0"),
    ("sweep.py", "--decays 0.1 --float-model none.pth.tar", "does not exist"),
    ("sweep.py", "--decays 0.1 --jobs 0", "--jobs: 0"),
    ("sweep.py", "--decays 0.1 --out afile/sub", "Not a directory"),
    ("sweep.py", "--decays 0.1 --nodes 2", "--nodes sets a SLURM job: add --launcher slurm"),
    ("sweep.py", "--decays 0.1 --launcher slurm --slurm-param =a100", "is not NAME=VALUE"),
]
if not torch.cuda.is_available():
    CASES.append(("cifar_prune_STE.py", f"--cuda-graphs {WRITE}", "single CUDA GPU"))
if shutil.which("sbatch") is None:
    CASES.append(("sweep.py", "--decays 0.1 --launcher slurm", "no sbatch/srun here"))
SMALL = {"cifar_train.py", "cifar_prune_STE.py", "cifar_finetune.py", "convert.py", "export.py"}


def snapshot(root):
    """Every file and folder under ``root`` with its bytes."""
    found = {}
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        found[rel] = None
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                found[os.path.join(rel, name)] = f.read()
    return found


def command_line(script, args):
    extra = ["--depth", "8", "--data-root", "data"] if script in SMALL else []
    if script in {"cifar_train.py", "cifar_prune_STE.py", "cifar_finetune.py"}:
        extra += ["--epochs", "1"]
    return extra + args.split()  # the case's own flags come last, so they win


def run_in_process(script, argv):
    """``script``'s ``run_main`` on ``argv``: (exit status, stderr). Every warning is shown."""
    module = importlib.import_module(script[:-3])
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("always")
        try:
            run_main(module.main, module.get_args_parser(), argv)
            status = 0
        except SystemExit as e:
            status = e.code
    return status, err.getvalue()


def assert_one_clean_line(status, stderr, words):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert status == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines


@pytest.mark.parametrize("script,args,words", CASES, ids=[f"{s}:{a}" for s, a, _ in CASES])
def test_bad_input_is_one_clean_line_and_changes_nothing(world, script, args, words, monkeypatch):
    monkeypatch.chdir(world)
    before = snapshot(world)
    status, stderr = run_in_process(script, command_line(script, args))
    assert_one_clean_line(status, stderr, words)
    assert not (world / "pwned").exists()
    assert snapshot(world) == before


REAL = ["--model raw.pth.tar --bin --evaluate",
        f"--model bits8.pth.tar --bin --momentum -1 {WRITE}",
        "--model float8.pth.tar --checkpoint afile/sub", f"--data-root empty {WRITE}",
        "--load damaged.bsq", "protected --out afile/sub"]


@pytest.mark.parametrize("script,args,words", [c for c in CASES if c[1] in REAL],
                         ids=[f"{s}:{a}" for s, a, _ in CASES if a in REAL])
def test_the_real_interpreter_agrees(world, script, args, words):
    """A few cases as real subprocesses: the same line, and no traceback at exit."""
    before = snapshot(world)
    proc = run_script(world, script, command_line(script, args), expect=2)
    assert_one_clean_line(proc.returncode, proc.stderr, words)
    assert snapshot(world) == before


def test_a_bug_is_one_line_asking_for_a_report_and_debug_shows_it(monkeypatch, capsys):
    def main(args):
        raise ZeroDivisionError("a bug")

    parser = argparse.ArgumentParser()
    with pytest.raises(SystemExit) as stop:
        run_main(main, parser, [])
    err = capsys.readouterr().err
    assert stop.value.code == 1 and len(err.strip().splitlines()) == 1
    assert "unexpected ZeroDivisionError: a bug" in err and "please report" in err
    monkeypatch.setenv("BSQ_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        run_main(main, parser, [])


def test_os_errors_name_the_path_the_reason_and_the_fix(capsys):
    def main(args):
        raise OSError(28, "No space left on device", "runs/x/checkpoint.pth.tar")

    with pytest.raises(SystemExit) as stop:
        run_main(main, argparse.ArgumentParser(), [])
    assert stop.value.code == 2
    assert capsys.readouterr().err == ("error: runs/x/checkpoint.pth.tar: No space left on device: "
                                       "free some disk space or write somewhere else\n")


def test_missing_matplotlib_is_one_line_and_nothing_is_drawn(tmp_path, world):
    blocker = tmp_path / "no_matplotlib"
    (blocker / "matplotlib").mkdir(parents=True)
    (blocker / "matplotlib" / "__init__.py").write_text("raise ImportError('blocked')\n")
    before = snapshot(world)
    proc = run_script(world, "plots.py", "protected", expect=2, env={"PYTHONPATH": str(blocker)})
    assert_one_clean_line(proc.returncode, proc.stderr, "pip install matplotlib")
    assert snapshot(world) == before
