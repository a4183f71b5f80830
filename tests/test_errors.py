"""Bad input ends in one line on stderr naming the problem, exit status 2, no traceback, and
leaves the files already in --checkpoint as they were."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from utils.checkpoint import checkpoint_state, save_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def world(tmp_path_factory, cifar10_root):
    """A folder with data, valid checkpoints of several kinds and a run folder to protect."""
    root = tmp_path_factory.mktemp("errors")
    from models import resnet

    save_checkpoint(checkpoint_state(resnet(depth=8).to_bits_(8)), root / "bits8.pth.tar")
    save_checkpoint(checkpoint_state(resnet(depth=8)), root / "float8.pth.tar")
    save_checkpoint(checkpoint_state(resnet(depth=14)), root / "float14.pth.tar")
    save_checkpoint(checkpoint_state(resnet(depth=8, num_classes=100).to_bits_(8)),
                    root / "c100.pth.tar")
    save_checkpoint(checkpoint_state(resnet(depth=8, act=2).to_bits_(8)), root / "pact.pth.tar")
    (root / "notes.pth.tar").write_text("not a checkpoint\n")
    good = (root / "bits8.pth.tar").read_bytes()
    (root / "half.pth.tar").write_bytes(good[: len(good) // 2])
    (root / "afile").write_text("")
    corrupt = root / "corrupt"
    shutil.copytree(cifar10_root, corrupt)
    batch = corrupt / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:100])
    run_folder = root / "run"
    run_folder.mkdir()
    shutil.copy(root / "bits8.pth.tar", run_folder / "checkpoint.pth.tar")
    (run_folder / "log.txt").write_text("epoch\n1\n")
    return root, cifar10_root


def _make_poison(root):
    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(root / 'pwned')!r}, 'w').write('ran')",)

    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "x": Payload()},
               root / "poison.pth.tar")


CASES = [
    # (script, arguments, words the message must contain)
    ("cifar_finetune.py", "--model missing.pth.tar --bin --evaluate", "does not exist"),
    ("cifar_finetune.py", "--model run --bin --evaluate", "is a folder"),
    ("cifar_finetune.py", "--model notes.pth.tar --bin --evaluate", "not a readable"),
    ("cifar_finetune.py", "--model half.pth.tar --bin --evaluate", "truncated"),
    ("cifar_finetune.py", "--model poison.pth.tar --bin --evaluate", "refused"),
    ("cifar_finetune.py", "--depth 14 --model bits8.pth.tar --bin --evaluate", "--depth 8"),
    ("cifar_finetune.py", "--model c100.pth.tar --bin --evaluate", "100 classes"),
    ("cifar_finetune.py", "--model pact.pth.tar --bin --evaluate", "--act 2"),
    ("cifar_finetune.py", "--model float8.pth.tar --bin --evaluate", "drop --bin"),
    ("cifar_finetune.py", "--model bits8.pth.tar --evaluate", "add --bin"),
    ("convert.py", "--depth 14 --model float14.pth.tar --dict bits8.pth.tar", "no scheme for layers"),
    ("convert.py", "--model bits8.pth.tar", "already a bits model"),
    ("convert.py", "--Nbits 9 --model float8.pth.tar", "--Nbits 9"),
    ("cifar_prune_STE.py", "--Nbits 0", "--Nbits 0"),
    ("cifar_prune_STE.py", "--act 9", "--act 9"),
    ("cifar_prune_STE.py", "--depth 21", "6n+2"),
    ("cifar_prune_STE.py", "--lr -0.1", "--lr -0.1 is negative"),
    ("cifar_prune_STE.py", "--decay -1", "--decay -1.0 is negative"),
    ("cifar_prune_STE.py", "--dataset imagenet", "invalid choice"),
    ("cifar_prune_STE.py", "--loader magic", "invalid choice"),
    ("cifar_prune_STE.py", "--act four", "invalid int value"),
    ("cifar_prune_STE.py", "--data-root nowhere", "cifar-10-batches-py"),
    ("cifar_prune_STE.py", "--data-root corrupt", "test_batch"),
    ("cifar_prune_STE.py", "--checkpoint afile/sub", "cannot be created"),
    ("cifar_prune_STE.py", "--lr 1e30 --decay 1e30 --L1 --model bits8.pth.tar "
                           "--resume run/checkpoint.pth.tar", "non-finite"),
    ("cifar_train.py", "--model bits8.pth.tar", "cifar_finetune.py"),
] + ([] if torch.cuda.is_available() else [("cifar_prune_STE.py", "--cuda-graphs", "single CUDA GPU")])


@pytest.mark.parametrize("script,args,words", CASES, ids=[f"{s}:{a}" for s, a, _ in CASES])
def test_bad_input_is_one_clean_line(world, script, args, words):
    root, data = world
    _make_poison(root)
    run_folder = root / "run"
    before = {name: (run_folder / name).read_bytes() for name in os.listdir(run_folder)}
    data_flag = "" if "--data-root" in args else f"--data-root {data}"
    cmd = [sys.executable, os.path.join(REPO, script), "--depth", "8", "--epochs", "1",
           "--checkpoint", "run", "--manualSeed", "0", *data_flag.split(), *args.split()]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and words in lines[0], lines
    assert not (root / "pwned").exists()
    after = {name: (run_folder / name).read_bytes() for name in os.listdir(run_folder)}
    assert after == before
