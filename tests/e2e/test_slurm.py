"""The sweep on SLURM without a cluster: a stand-in sbatch/srun/sacct/scancel/scontrol on PATH
(tests/fake_slurm.py) runs the sbatch scripts submitit writes on this machine.

Checked: the script asks for the flags' resources and runs the stage's command in its folder;
a stage preempted as SLURM preempts it (SIGTERM, then submitit's USR2), requeued, ends
bit-identical to an uninterrupted one (CPU); and the sweep driver interrupted (Ctrl-C, then
killed) and run again submits no stage twice: Ctrl-C cancels its jobs, a rerun reuses the
finished stages and follows the jobs still running.
"""
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import submitit
import torch

import sweep
from utils.store.checkpoint import load_checkpoint
from utils.sweep.launchers import JOB_RECORD, Resources, make_launcher
from utils.sweep.stagejob import StageJob

from helpers import REPO, run_script

FAKE = os.path.join(REPO, "tests", "fake_slurm.py")
FIRST_IDS = itertools.count(1000, 1000)  # each test's job ids are new to submitit's job watcher
BSQ = ("--depth 8 --epochs 4 --Prun_Int 2 --decay 3 --L1 --train-batch 64 --manualSeed 3 "
       "--deterministic --progress 0 --no-tensorboard")


class FakeSlurm:
    """The stand-in's state folder: what was submitted, each job's state and processes."""

    def __init__(self, folder):
        self.folder = folder

    def log(self):
        path = self.folder / "log"
        return path.read_text().splitlines() if path.exists() else []

    def submitted(self):
        """``{job id: the sbatch script's path}``, in submission order."""
        return dict(line.split()[1:] for line in self.log() if line.startswith("sbatch "))

    def state(self, job_id):
        path = self.folder / str(job_id) / "state"
        return path.read_text().strip() if path.exists() else None

    def signal(self, job_id, signum):
        """``signum`` to every process of the job's steps (as ``scancel --signal`` sends it)."""
        for pgid in (self.folder / str(job_id) / "steps").read_text().split():
            os.killpg(int(pgid), signum)


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    folder = tmp_path / "slurm"
    folder.mkdir()
    (folder / "next_id").write_text(str(next(FIRST_IDS)))
    subprocess.run([sys.executable, FAKE, "install", str(tmp_path / "bin")], check=True)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(folder))
    monkeypatch.setenv("FAKE_SLURM_KILLWAIT", "1")
    fake = FakeSlurm(folder)
    yield fake
    for job_id in fake.submitted():  # nothing outlives the test
        if (folder / job_id / "steps").exists():
            try:
                fake.signal(job_id, signal.SIGKILL)
            except OSError:
                pass  # ended


def wait_until(condition, what, timeout=300):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_sbatch_script_asks_for_the_flags_resources_and_runs_the_stage(slurm, tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("FAKE_SLURM_HOLD", "1")  # submitted, left pending
    out = tmp_path / "out"
    args = sweep.get_args_parser().parse_args([
        "--decays", "0.1", "--float-model", "float.pth.tar", "--out", str(out),
        "--launcher", "slurm", "--partition", "gpu", "--account", "lab", "--time", "90",
        "--nodes", "2", "--gpus-per-job", "4", "--cpus-per-job", "16", "--mem", "64",
        "--slurm-param", "constraint=a100", "--slurm-param", "qos=high",
        "--slurm-param", "exclusive", "--manualSeed", "1"])
    stages, _ = sweep.plan(args, str(out))
    stage = next(s for s in stages if s.name == "alpha 0.1 BSQ")
    run = make_launcher(Resources.from_args(args)).submit(stage, slot=0)
    jobs = out / "alpha-0.1" / "bsq" / "jobs"
    job_id = run.job.job_id
    assert list(slurm.submitted()) == [job_id] and slurm.state(job_id) == "PENDING"
    lines = (jobs / f"{job_id}_submission.sh").read_text().splitlines()
    for line in ["#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --time=90",
                 "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --cpus-per-task=16", "#SBATCH --mem=64GB",
                 "#SBATCH --constraint=a100", "#SBATCH --qos=high", "#SBATCH --exclusive",
                 "#SBATCH --requeue", "#SBATCH --signal=USR2@90",
                 "#SBATCH --job-name=alpha-0.1-BSQ", f"#SBATCH --output={jobs}/%j_0_log.out",
                 f"#SBATCH --error={jobs}/%j_0_log.err",
                 f"# alpha 0.1 BSQ: {shlex.join(stage.command())}",
                 f"srun --unbuffered --output {jobs}/%j_%t_log.out --error {jobs}/%j_%t_log.err "
                 f"{sys.executable} -u -m submitit.core._submit {jobs}"]:
        assert line in lines, line
    assert (out / "alpha-0.1" / "bsq" / JOB_RECORD).exists()
    job = run.job.submission().function  # what the job will run, as pickled for the node
    assert isinstance(job, StageJob) and job.command == stage.command()
    assert job.folder == str(out / "alpha-0.1" / "bsq")
    for name, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": job_id,
                        "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_NODEID": "1",
                        "SLURM_PROCID": "1", "SLURM_JOB_NUM_NODES": "2"}.items():
        monkeypatch.setenv(name, value)
    argv = job.argv(submitit.JobEnvironment())  # on the second node
    assert argv[:7] == [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=4",
                        "--nnodes=2", "--node-rank=1", "--master-addr=gpu07"]
    assert argv[7].startswith("--master-port=") and argv[8:] == stage.command()[1:]


def same(a, b, where="checkpoint"):
    """``a`` and ``b`` hold the same values, every tensor equal to the bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_a_preempted_stage_is_requeued_and_ends_as_an_uninterrupted_one(slurm, tmp_path,
                                                                        cifar10_root):
    """Two jobs of the same BSQ stage at once, in two folders; one is preempted after its first
    epoch (held meanwhile, so that the signals land mid-run) and resumes before its second
    re-quantization."""
    flags = f"{BSQ} --data-root {cifar10_root}".split()
    launcher = make_launcher(Resources("slurm", gpus=0))
    preempted, straight = (launcher.submit(sweep.Stage(name, "cifar_prune_STE.py", flags,
                                                       str(tmp_path / name)), slot=0)
                           for name in ("preempted", "straight"))
    wait_until((tmp_path / "preempted" / "checkpoint.pth.tar").exists, "the first epoch's end")
    slurm.signal(preempted.job.job_id, signal.SIGSTOP)  # held, so the signals land mid-run
    preempted.job._interrupt()  # submitit's preemption: SIGTERM, then USR2, to the job's processes
    slurm.signal(preempted.job.job_id, signal.SIGCONT)
    wait_until(lambda: preempted.done() and straight.done(), "the jobs' ends")
    result, reference = preempted.result(), straight.result()
    assert f"scontrol requeue {preempted.job.job_id}" in slurm.log()  # requeued by submitit ...
    stderr = (tmp_path / "preempted" / "stderr.txt").read_text()
    assert "error: interrupted in epoch" in stderr  # ... after the script stopped mid-run ...
    for name in ("checkpoint.pth.tar", "model_best.pth.tar"):  # ... and resumed to the same end
        a, b = (load_checkpoint(tmp_path / run / name) for run in ("preempted", "straight"))
        a.pop("args"), b.pop("args")  # the run folders, and --resume
        same(a, b)
    for key in ("acc", "best_acc", "comp", "avg_bits", "scheme"):
        assert result[key] == reference[key], key
    epochs = [line.split("\t")[0] for line in
              (tmp_path / "preempted" / "log.txt").read_text().splitlines()[1:]]
    assert epochs == [str(e) for e in range(1, 5)]


@pytest.fixture(scope="module")
def float_model(tmp_path_factory, cifar10_root):
    cwd = tmp_path_factory.mktemp("float")
    run_script(cwd, "cifar_train.py", f"--depth 8 --data-root {cifar10_root} --epochs 1 "
               "--train-batch 64 --manualSeed 0 --checkpoint float --no-tensorboard")
    return cwd / "float" / "model_best.pth.tar"


def start_sweep(cwd, args, name):
    """The sweep driver in the background, its stdout and stderr in ``cwd/name.out|err``."""
    with open(cwd / f"{name}.out", "w") as out, open(cwd / f"{name}.err", "w") as err:
        return subprocess.Popen([sys.executable, os.path.join(REPO, "sweep.py"), *args],
                                cwd=cwd, stdout=out, stderr=err,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_the_driver_interrupted_and_rerun_submits_nothing_twice(slurm, tmp_path, float_model,
                                                                cifar10_root):
    out = tmp_path / "sweep"
    args = ["--decays", "20", "--depth", "8", "--epochs-scale", "0.001", "--train-batch", "64",
            "--data-root", cifar10_root, "--float-model", str(float_model), "--out", str(out),
            "--manualSeed", "0", "--launcher", "slurm", "--gpus-per-job", "0", "--progress", "0"]
    bsq = str(out / "alpha-20" / "bsq")

    def bsq_job():
        """The id of the BSQ stage's latest job once its script runs, else None."""
        ids = [i for i, script in slurm.submitted().items() if script.startswith(bsq)]
        started = ids and (slurm.folder / ids[-1] / "steps").exists()
        return ids[-1] if started and slurm.state(ids[-1]) == "RUNNING" else None

    # Ctrl-C while the BSQ stage runs: its job is cancelled, and the sweep says how to go on
    driver = start_sweep(tmp_path, args, "first")
    wait_until(bsq_job, "the BSQ job")
    first = bsq_job()
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=120) == 130
    lines = [line for line in (tmp_path / "first.err").read_text().splitlines() if line.strip()]
    assert lines[-1].startswith("error: interrupted; the running stages' jobs were cancelled")
    assert f"scancel {first}" in slurm.log()
    wait_until(lambda: slurm.state(first) == "CANCELLED", "the cancelled job's end")

    # run again, and killed (no cancelling: a lost login session) while its BSQ job is held
    driver = start_sweep(tmp_path, args, "second")
    wait_until(lambda: bsq_job() not in (None, first), "the second BSQ job")
    second = bsq_job()
    slurm.signal(second, signal.SIGSTOP)
    record = out / "alpha-20" / "bsq" / JOB_RECORD
    wait_until(lambda: json.loads(record.read_text())["job_id"] == second, "the job's record")
    driver.kill()
    driver.wait(timeout=60)

    # and again: it follows the job still running, then runs the rest
    driver = start_sweep(tmp_path, args, "third")
    wait_until(lambda: "still running as job" in (tmp_path / "third.out").read_text(),
               "the third run to find the job")
    slurm.signal(second, signal.SIGCONT)
    assert driver.wait(timeout=300) == 0, (tmp_path / "third.err").read_text()
    stdout = (tmp_path / "third.out").read_text()
    assert "[sweep] 8-bit conversion: done before, reusing its result.json" in stdout
    assert f"[sweep] alpha 20 BSQ: still running as job {second}" in stdout
    folders = [os.path.dirname(os.path.dirname(s)) for s in slurm.submitted().values()]
    assert sorted(folders) == sorted(str(out / f) for f in (
        "float-8", "alpha-20/bsq", "alpha-20/bsq", "alpha-20/finetune", "alpha-20/scratch",
        "alpha-20/scratch-ft"))  # each stage once, and the cancelled BSQ stage again
    assert json.loads(stdout.strip().splitlines()[-1])["rows"][0]["alpha"] == 20.0
