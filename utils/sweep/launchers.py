"""Where a sweep's stages run: as submitit jobs on this machine (``--launcher local``) or on a
SLURM cluster (``--launcher slurm``), one mechanism for both.

The sweep decides which stage runs when (its inputs ready, at most ``--jobs`` at once); a
``Launcher`` submits a stage as a job (``utils/sweep/stagejob.py``: the stage's script, its logs in
the stage's folder), follows it and cancels it. Each stage's folder keeps submitit's files under
``jobs/`` (for SLURM the sbatch script, the job's own log, the pickled job and its result; a
local job's controller writes ``controller.txt`` there) and
``job.json``, the job's id: a sweep run again with the same command follows a job still queued or
running instead of submitting it twice.

``local``: up to ``--jobs`` stages at once; job slot i gets ``--gpus-per-job`` of the visible
GPUs, from GPU ``i * gpus-per-job`` on, round the visible GPUs (so slot i runs on GPU
``i % #GPUs`` with one GPU per job). ``slurm``: each stage one job with the flags' resources, at
its time limit or preempted requeued and resumed (utils/sweep/stagejob.py).
"""
import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
import time
from dataclasses import dataclass

import submitit
import torch
from submitit.core.utils import FailedJobError, UncompletedJobError

from utils.cli.flags import number
from utils.errors import BSQError
from utils.report.console import duration, times
from utils.store.files import write_json
from utils.sweep.stagejob import STDERR, STDOUT, STOPPED, StageJob, last_line

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repository
JOB_RECORD = "job.json"
CONTROLLER_LOG = "controller.txt"  # a local job's controller writes here, not to the sweep's stderr
CANCEL_WAIT_S = 30.0  # how long a cancelled local job may take to end
REQUEUES = 20  # time limits a SLURM job may hit, each time requeued and resumed
FOREVER_MIN = 10 ** 7  # a local job's time limit: none
TIME_MIN = 24 * 60  # a SLURM job's, by default


class StageFailed(BSQError):
    """A stage of the sweep exited with an error."""


def slurm_param(text):
    """``--slurm-param``: ``NAME=VALUE`` (``#SBATCH --NAME=VALUE``) or ``NAME`` alone."""
    name, _, value = text.partition("=")
    if not name or name.startswith("-") or " " in name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE (an sbatch option without "
                                         "its dashes, e.g. constraint=a100)")
    return name, value or True


def add_launcher_flags(parser):
    group = parser.group("launcher")
    group.add_argument("--launcher", choices=["local", "slurm"], default="local",
                       help="run the stages on this machine or as SLURM jobs (through submitit)")
    group.add_argument("--jobs", type=number(int, 1), default=None,
                       help="stages run at once (default: 1 with local, every ready stage with "
                            "slurm)")
    group.add_argument("--gpus-per-job", type=number(int, 0), default=1,
                       help="GPUs of a stage on each of its nodes; above 1 (or with --nodes above "
                            "1) one torchrun rank per GPU (on a machine without GPUs: CPU ranks)")
    group.add_argument("--nodes", type=number(int, 1), default=1,
                       help="nodes of each SLURM job (slurm)")
    group.add_argument("--cpus-per-job", type=number(int, 1), default=None,
                       help="CPUs of each SLURM job per node (slurm; default: the cluster's)")
    group.add_argument("--mem", type=number(float, 0, lo_open=True), default=None,
                       metavar="GB", help="memory of each SLURM job per node (slurm)")
    group.add_argument("--time", type=number(int, 1), default=TIME_MIN, metavar="MINUTES",
                       help="time limit of each SLURM job; a job at its limit is requeued and "
                            f"resumes, up to {REQUEUES} times (slurm)")
    group.add_argument("--partition", default=None, help="SLURM partition (slurm)")
    group.add_argument("--account", default=None, help="SLURM account (slurm)")
    group.add_argument("--slurm-param", type=slurm_param, action="append", default=[],
                       metavar="NAME=VALUE", help="any other sbatch option, e.g. constraint=a100 "
                                                  "or qos=high (slurm; repeatable)")


SLURM_ONLY = {"nodes": 1, "cpus_per_job": None, "mem": None, "time": TIME_MIN, "partition": None,
              "account": None, "slurm_param": []}  # the flags that set a SLURM job, and defaults


@dataclass(frozen=True)
class Resources:
    """Where and how each stage runs, from the launcher flags."""
    launcher: str = "local"
    jobs: int = None  # stages at once; None: 1 locally, no limit on SLURM
    gpus: int = 1  # per node
    nodes: int = 1
    cpus: int = None
    mem_gb: float = None
    time_min: int = TIME_MIN
    partition: str = None
    account: str = None
    params: tuple = ()  # (name, value) pairs of other sbatch options

    @classmethod
    def from_args(cls, args):
        if args.launcher == "local":
            given = [f for f, default in SLURM_ONLY.items() if getattr(args, f) != default]
            if given:
                raise BSQError(f"--{given[0].replace('_', '-')} sets a SLURM job: add --launcher "
                               "slurm, or drop it")
        return cls(args.launcher, args.jobs, args.gpus_per_job, args.nodes, args.cpus_per_job,
                   args.mem, args.time, args.partition, args.account, tuple(args.slurm_param))

    @property
    def processes(self):
        """torchrun ranks per node."""
        return max(1, self.gpus)


class Running:
    """A stage's job, as the sweep follows it."""

    def __init__(self, stage, job, slot):
        self.stage, self.job, self.slot, self.start = stage, job, slot, time.monotonic()

    def done(self):
        return self.job.done()

    def status(self):
        """The stage's latest progress line (stderr) or epoch line (stdout), whichever file was
        written last: both carry the epoch and the time left."""
        latest, newest = None, -1
        for name in (STDOUT, STDERR):
            path = os.path.join(self.stage.folder, name)
            try:
                with open(path) as log:
                    lines = [line.strip() for line in log if line.startswith("epoch ")]
                written = os.stat(path).st_mtime_ns
            except OSError:
                continue
            if lines and written >= newest:  # a tie: the progress line
                latest, newest = lines[-1], written
        latest = latest or f"starting (job {self.job.job_id}: {self.job.state})"
        return (f"[sweep] {self.stage.name} ({duration(time.monotonic() - self.start)}): "
                f"{latest} (log {os.path.join(self.stage.folder, STDOUT)})")

    def result(self):
        """The stage's final JSON line, with its command and wall time; raises StageFailed."""
        stage = self.stage
        try:
            outcome = self.job.results()[0]
        except (FailedJobError, UncompletedJobError):
            raise StageFailed(f"stage {stage.name}: its job {self.job.job_id} ended without a "
                              f"result ({self.job.state}): see its log in "
                              f"{os.path.join(stage.folder, 'jobs')}") from None
        if outcome["status"] in STOPPED:
            raise StageFailed(f"stage {stage.name} was stopped (status {outcome['status']}) and "
                              "not requeued: run the same command again to resume it")
        if outcome["status"]:
            err = os.path.join(stage.folder, STDERR)
            raise StageFailed(f"stage {stage.name} exited with status {outcome['status']}: "
                              f"{last_line(err) or 'no message'} (see {err})")
        result = outcome["result"]
        print(f"[sweep] {stage.name}: {duration(result['seconds'])}, test accuracy "
              f"{result['acc']:.2f}%, {times(result['comp'])}", flush=True)
        return result


class Launcher:
    """Submits stages as submitit jobs of the executor ``cluster`` and follows them."""
    cluster = None

    def __init__(self, resources):
        self.resources = resources

    def folder(self, stage):
        return os.path.join(stage.folder, "jobs")

    def job(self, stage, slot):
        """The stage's ``StageJob`` for job slot ``slot``."""
        return StageJob(stage.name, stage.command(), stage.folder, stage.resumable,
                        self.env(slot), self.resources.processes, self.resources.nodes)

    def env(self, slot):
        return {}

    def spawning(self, stage):
        """What surrounds the submission of ``stage``'s job (a context manager)."""
        return contextlib.nullcontext()

    def where(self, job, slot):
        """Where a job runs, for the line that says it started."""
        return ""

    def device(self):
        """Where the stages run, for the sweep's table."""
        raise NotImplementedError

    def parameters(self, stage, job):
        """The submitit parameters of a stage's job."""
        return {"name": stage.name.replace(" ", "-"), "tasks_per_node": 1,
                "timeout_min": FOREVER_MIN}

    def submit(self, stage, slot):
        """Submit ``stage`` as a job in slot ``slot``; returns its ``Running``."""
        job = self.job(stage, slot)
        command = shlex.join(job.script_argv())
        executor = submitit.AutoExecutor(self.folder(stage), cluster=self.cluster,
                                         slurm_max_num_timeout=REQUEUES)
        executor.update_parameters(**self.parameters(stage, job))
        path = os.environ.get("PYTHONPATH")
        try:  # the job unpickles a StageJob: utils/ must be importable where it runs
            with submitit.helpers.environment_variables(
                    PYTHONPATH=ROOT + (os.pathsep + path if path else "")), self.spawning(stage):
                submitted = executor.submit(job)
        except FailedJobError as e:
            raise BSQError(f"stage {stage.name} could not be submitted: "
                           f"{str(e).strip().splitlines()[-1]}") from None
        os.makedirs(stage.folder, exist_ok=True)
        write_json({"launcher": self.cluster, "job_id": submitted.job_id, "slot": slot,
                    "command": stage.command()}, os.path.join(stage.folder, JOB_RECORD))
        print(f"[sweep] {stage.name}{self.where(submitted, slot)}: {command}", flush=True)
        return Running(stage, submitted, slot)

    def attach(self, stage):
        """The ``Running`` of the job an earlier run of the sweep submitted for ``stage`` and
        left queued or running, or None."""
        try:
            with open(os.path.join(stage.folder, JOB_RECORD)) as f:
                record = json.load(f)
        except (OSError, ValueError):
            return None
        if record.get("launcher") != self.cluster or not stage.same_run(record.get("command")):
            return None
        job = self.find(stage, str(record["job_id"]))
        if job is None or job.done():
            return None
        print(f"[sweep] {stage.name}: still running as job {job.job_id} (submitted by an "
              "earlier run of the sweep), following it", flush=True)
        return Running(stage, job, record.get("slot", 0))

    def find(self, stage, job_id):
        """The submitit job ``job_id`` of ``stage``, or None where it cannot be followed."""
        return None

    def cancel(self, running):
        """Cancel the jobs of ``running`` (they keep their last checkpoint)."""
        for run in running:
            run.job.cancel(check=False)


def visible_gpus():
    """The GPU ids a local job may be given, or [] without CUDA."""
    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    return env.split(",") if env else [str(i) for i in range(torch.cuda.device_count())]


def gpus_for(slot, gpus, per_job=1):
    """Job slot ``slot``'s GPUs: ``per_job`` of ``gpus`` from ``slot * per_job`` on, round the
    list; None without GPUs."""
    if not gpus:
        return None
    return [gpus[(slot * per_job + k) % len(gpus)] for k in range(per_job)]


class LocalLauncher(Launcher):
    """Jobs on this machine (submitit's LocalExecutor): a job slot's GPUs are its only visible
    ones."""
    cluster = "local"

    def __init__(self, resources):
        super().__init__(resources)
        self.gpus = visible_gpus()
        # submitit cancels a local job with SIGINT. A sweep started in the background (``nohup
        # python sweep.py ... &``) inherits SIGINT ignored, and so would its jobs, which then
        # outlive their cancellation; caught here, SIGINT is at its default in every job.
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    @contextlib.contextmanager
    def spawning(self, stage):
        """The job's controller, a process submitit starts, inherits the standard error of the
        sweep, and stopped by a cancellation it prints a traceback there: it is started with
        ``jobs/controller.txt`` of the stage's folder as its standard error instead."""
        os.makedirs(self.folder(stage), exist_ok=True)
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.path.join(self.folder(stage), CONTROLLER_LOG), "a") as log:
                os.dup2(log.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)

    def env(self, slot):
        gpus = gpus_for(slot, self.gpus, self.resources.gpus)
        return {} if gpus is None else {"CUDA_VISIBLE_DEVICES": ",".join(gpus)}

    def device(self):
        return "cuda" if self.gpus else "cpu"

    def where(self, job, slot):
        gpus = self.env(slot).get("CUDA_VISIBLE_DEVICES")
        return f" on GPU{'s' if ',' in gpus else ''} {gpus}" if gpus else ""

    def find(self, stage, job_id):
        return OrphanJob(self.folder(stage), job_id) if job_id.isdigit() else None

    def cancel(self, running):
        super().cancel(running)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while any(not run.done() for run in running) and time.monotonic() < deadline:
            time.sleep(0.1)


class OrphanJob(submitit.LocalJob):
    """A local job whose driver was an earlier run of the sweep: followed through its
    controller's process id."""

    def alive(self):
        try:
            with open(f"/proc/{self.job_id}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            return False
        return "submitit.local._local" in cmdline and str(self.paths.folder) in cmdline

    def get_info(self, mode="force"):
        return {"jobState": "RUNNING" if self.alive() else "FINISHED"}

    def cancel(self, check=True):
        if self.alive():
            os.kill(int(self.job_id), signal.SIGINT)


class SlurmLauncher(Launcher):
    """One SLURM job per stage (submitit's SlurmExecutor), with the flags' resources."""
    cluster = "slurm"

    def __init__(self, resources):
        super().__init__(resources)
        if shutil.which("sbatch") is None or shutil.which("srun") is None:
            raise BSQError("--launcher slurm: no sbatch/srun here: run the sweep on a SLURM "
                           "login node, or use --launcher local")

    def device(self):
        r = self.resources
        return f"SLURM, {r.nodes} node(s) x {r.gpus} GPU(s) per job"

    def where(self, job, slot):
        return f" as SLURM job {job.job_id}"

    def parameters(self, stage, job):
        r = self.resources
        extra = {"requeue": True, **dict(r.params)}
        parameters = {**super().parameters(stage, job), "timeout_min": r.time_min,
                      "nodes": r.nodes, "gpus_per_node": r.gpus or None,
                      "cpus_per_task": r.cpus, "mem_gb": r.mem_gb, "slurm_partition": r.partition,
                      "slurm_account": r.account, "slurm_additional_parameters": extra,
                      "slurm_setup": [f"# {stage.name}: {shlex.join(job.command)}"]}
        return {k: v for k, v in parameters.items() if v is not None}

    def find(self, stage, job_id):
        nodes = range(self.resources.nodes)
        return submitit.SlurmJob(self.folder(stage), job_id, tasks=list(nodes))


LAUNCHERS = {"local": LocalLauncher, "slurm": SlurmLauncher}


def make_launcher(resources):
    return LAUNCHERS[resources.launcher](resources)
