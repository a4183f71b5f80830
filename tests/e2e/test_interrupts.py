"""Real interruptions of real runs: Ctrl-C, SIGTERM, a full disk, a second run on the same folder.

Each ends in one line on stderr and leaves a folder that resumes: the last checkpoint intact, no
temporary file, no lock.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from utils.store.checkpoint import load_checkpoint
from utils.store.files import FILE_MODE

from helpers import REPO, run_script

BSQ = "--depth 8 --Nbits 8 --bin --L1 --Prun_Int 2 --train-batch 16 --manualSeed 1 --progress 0"


def start(cwd, script, args):
    """The script in the background. SIGINT gets its default action back in the child: a shell
    starts background jobs with SIGINT ignored, and Python then leaves it ignored."""
    return subprocess.Popen([sys.executable, os.path.join(REPO, script), *args.split()], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(path, process, timeout=180):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def leftovers(folder):
    return [n for n in os.listdir(folder) if n.startswith(".tmp-") or n == ".lock"]


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_says_how_to_resume_and_resumes(tmp_path, cifar10_root, sig, status):
    common = f"{BSQ} --data-root {cifar10_root} --checkpoint run"
    proc = start(tmp_path, "cifar_prune_STE.py", f"{common} --epochs 50")
    wait_for(tmp_path / "run" / "checkpoint.pth.tar", proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == status, err
    epoch = load_checkpoint(tmp_path / "run" / "checkpoint.pth.tar")["epoch"]
    assert lines == [f"error: interrupted in epoch {epoch + 1}: resume with --resume "
                     "run/checkpoint.pth.tar"]
    assert leftovers(tmp_path / "run") == []
    run_script(tmp_path, "cifar_prune_STE.py",
               f"{common} --epochs {epoch + 1} --resume run/checkpoint.pth.tar")
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pth.tar")["epoch"] == epoch + 1


def unshare_works():
    try:
        return subprocess.run(["unshare", "--mount", "--map-root-user", "true"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.parametrize("how", ["tmpfs", "patched write"])
def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path, cifar10_root, how):
    """``tmpfs``: a real 24 MB file system (a mount namespace) that fills up in epoch 2, as one
    epoch's two checkpoints of a ResNet-8 take 19 MB. Elsewhere, or in addition: the 3rd
    checkpoint write raises ENOSPC from a patched file object (``tests/faults.py``)."""
    out = tmp_path / "out"
    out.mkdir()
    common = f"{BSQ} --data-root {cifar10_root} --epochs 4"
    script = os.path.join(REPO, "cifar_prune_STE.py")
    if how == "tmpfs":
        if not unshare_works():
            pytest.skip("no mount namespace here: the patched write covers this machine")
        disk = tmp_path / "disk"
        disk.mkdir()
        inner = (f"mount -t tmpfs -o size=24m tmpfs {disk} && cd {disk} && "
                 f"{sys.executable} {script} {common} --checkpoint run; status=$?; "
                 f"cp -r {disk}/run {out}/run; exit $status")
        proc = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", inner],
                              capture_output=True, text=True, timeout=600)
    else:
        proc = run_script(out, "cifar_prune_STE.py", f"{common} --checkpoint run", expect=2,
                          faults=("--disk-full-at-write", "2"))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "No space left on device" in lines[0], lines
    assert "free some disk space" in lines[0] and "run/" in lines[0]
    assert leftovers(out / "run") == []
    assert load_checkpoint(out / "run" / "checkpoint.pth.tar")["epoch"] == 1
    run_script(out, "cifar_prune_STE.py", f"{common} --checkpoint run --epochs 2 --resume "
               "run/checkpoint.pth.tar")
    assert load_checkpoint(out / "run" / "checkpoint.pth.tar")["epoch"] == 2


def test_a_second_run_on_the_same_folder_is_refused_with_the_first_ones_pid(tmp_path,
                                                                              cifar10_root):
    common = f"{BSQ} --data-root {cifar10_root} --checkpoint run"
    first = start(tmp_path, "cifar_prune_STE.py", f"{common} --epochs 50")
    try:
        wait_for(tmp_path / "run" / "checkpoint.pth.tar", first)
        before = {n: (tmp_path / "run" / n).read_bytes() for n in ("model_best.pth.tar",)}
        proc = run_script(tmp_path, "cifar_prune_STE.py", f"{common} --epochs 50 --overwrite",
                          expect=2)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert lines == [f"error: --checkpoint run is in use by another run (PID {first.pid}): "
                         "wait for it to end, or pick another folder"]
        assert all((tmp_path / "run" / n).exists() for n in before)
    finally:
        first.terminate()
        first.communicate(timeout=120)


def test_stale_temporary_files_go_and_new_files_get_the_usual_mode(tmp_path, cifar10_root):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".tmp-killed-save.pth.tar").write_bytes(b"half a checkpoint")
    shutil.copy(os.devnull, folder / "unrelated.txt")
    run_script(tmp_path, "cifar_prune_STE.py", f"{BSQ} --data-root {cifar10_root} --epochs 1 "
               "--checkpoint run")
    assert leftovers(folder) == []
    assert (folder / "unrelated.txt").exists()
    for name in ("checkpoint.pth.tar", "model_best.pth.tar", "log.txt", "scheme.json"):
        assert (folder / name).stat().st_mode & 0o777 == FILE_MODE, name
