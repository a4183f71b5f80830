"""torchrun with two CPU processes (gloo): BSQ with re-quantizations inside the run."""
import os
import subprocess
import sys

from helpers import REPO, last_json, run_script


def test_torchrun_two_ranks_stay_identical(tmp_path, cifar10_root):
    common = f"--depth 8 --data-root {cifar10_root} --manualSeed 0"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(REPO, "cifar_prune_STE.py"), *common.split(), "--epochs", "3",
           "--Prun_Int", "1", "--decay", "20", "--train-batch", "16", "--L1", "--bin",
           "--checkpoint", "ddp"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    figures = last_json(proc)
    assert figures["comp"] > 4.0  # some re-quantization inside the run dropped bits
    # fit() gathers every rank's parameters, buffers and scheme after each re-quantization and
    # at the end, and compares them bit for bit; rank 0 reports it.
    checks = [line for line in lines if "2 ranks hold bit-identical models" in line]
    assert len(checks) == 3 + 1
    assert sum(line.startswith("epoch ") for line in lines) == 3  # rank 0 alone logs
    assert len(list((tmp_path / "ddp").glob("events.out.tfevents.*"))) == 1  # and writes events
    evaluated = last_json(run_script(tmp_path, "cifar_finetune.py", f"{common} --model "
                                     "ddp/checkpoint.pth.tar --bin --evaluate"))
    assert evaluated["acc"] == figures["acc"] and evaluated["scheme"] == figures["scheme"]
