"""One stage of a sweep as a submitit job: what runs where the stage runs (this machine or a
SLURM node). It imports no torch, so a job costs one light process besides the stage's script.

The job runs the stage's script (under ``torchrun`` with more than one process) with its stdout
and stderr appended to ``stdout.txt`` and ``stderr.txt`` in the stage's folder, writes the final
JSON line to ``result.json`` when the script succeeds, and returns
``{"status": exit status, "result": that line or None}``. A stage redone whole removes the
earlier run's ``result.json`` first, as ``--overwrite`` removes its other files: from then on the
folder holds the new run, and until that run ends nothing in it says the stage is finished.

A stage that holds a ``checkpoint.pth.tar`` continues it with ``--resume``. So a job requeued
after a preemption or at its time limit goes on from its last epoch and ends as an uninterrupted
run would: submitit catches the requeue signal (USR2, ``--signal`` of sbatch) in the job and calls
``checkpoint``, which stops the script with SIGTERM (it keeps its last committed epoch) and hands
back this same job to be requeued. The script itself ignores the requeue signal, and it gets
SIGTERM if the job process dies (Linux), so it never outlives its job.
"""
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time

import submitit

from utils.store.files import write_json

STDOUT, STDERR, RESULT = "stdout.txt", "stderr.txt", "result.json"
CHECKPOINT = "checkpoint.pth.tar"
POLL_S = 0.5
STOPPING_S = 2.0  # how long a script the job stops may take to end on its own before SIGTERM
STOP_S = 60.0  # how long it may take to exit after SIGTERM before SIGKILL
GRACE_S = 120.0  # after the cluster's SIGTERM reached the script: wait for the requeue signal
STOPPED = (130, 143, -signal.SIGINT, -signal.SIGTERM)  # exit statuses of a stopped script
PORT_BASE, PORTS = 20000, 20000  # torchrun's rendezvous port across nodes, from the job id
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _in_child():
    """Before the script starts: ignore the requeue signal (a cluster sends it to every process
    of the job; the job handles it) and receive SIGTERM when the job process dies."""
    signal.signal(submitit.JobEnvironment._usr_sig(), signal.SIG_IGN)
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_process(argv, cwd, env, stdout, stderr):
    """Start the stage's script (tests replace this to run it in-process)."""
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr,
                            preexec_fn=_in_child)


def last_line(path):
    """The last non-empty line of the text file ``path``, or None."""
    try:
        with open(path) as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return None
    return lines[-1] if lines else None


class StageJob(submitit.helpers.Checkpointable):
    """The job of a stage: ``command`` (a training script or a conversion, ``--checkpoint
    folder`` included) run in ``folder`` with ``env`` added to the environment, as
    ``processes`` x ``nodes`` ranks under torchrun when that is more than one. ``resumable``:
    an interrupted run continues with ``--resume``; otherwise it is redone whole
    (``--overwrite``)."""

    def __init__(self, name, command, folder, resumable=True, env=None, processes=1, nodes=1):
        self.name, self.command, self.folder = name, list(command), folder
        self.resumable, self.env = resumable, dict(env or {})
        self.processes, self.nodes = processes, nodes
        self.seconds = 0.0  # the wall time of the earlier parts of a requeued job
        self._process = self._start = None

    def __getstate__(self):  # what a requeue hands on: no process, no clock
        return {**self.__dict__, "_process": None, "_start": None}

    def script_argv(self):
        """The stage's command as it runs now: ``--resume`` when its folder holds a checkpoint,
        ``--overwrite`` for a stage that is redone whole."""
        checkpoint = os.path.join(self.folder, CHECKPOINT)
        if not self.resumable:
            return self.command + ["--overwrite"]
        return self.command + (["--resume", checkpoint] if os.path.isfile(checkpoint) else [])

    def argv(self, task):
        """``script_argv`` as it is, or under torchrun with ``processes`` ranks on each of
        ``nodes`` nodes; across nodes, ``task`` (a ``submitit.JobEnvironment``) says which node
        this is, and the first one leads."""
        script = self.script_argv()
        if self.processes * self.nodes == 1:
            return script
        run = [sys.executable, "-m", "torch.distributed.run",
               f"--nproc-per-node={self.processes}"]
        if self.nodes == 1:
            run.append("--standalone")
        else:
            port = PORT_BASE + int(task.raw_job_id) % PORTS
            run += [f"--nnodes={self.nodes}", f"--node-rank={task.node}",
                    f"--master-addr={task.hostnames[0]}", f"--master-port={port}"]
        return run + script[1:]  # script[0] is the Python that torchrun replaces

    def __call__(self):
        task = submitit.JobEnvironment()
        os.makedirs(self.folder, exist_ok=True)
        if not self.resumable:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.folder, RESULT))
        self._start = time.monotonic()
        with open(os.path.join(self.folder, STDOUT), "a") as out, \
                open(os.path.join(self.folder, STDERR), "a") as err:
            self._process = start_process(self.argv(task), self.folder,
                                          {**os.environ, **self.env}, out, err)
            try:
                while self._process.poll() is None:  # never a blocking wait: see checkpoint
                    time.sleep(POLL_S)
            finally:
                self._stop()  # an exception here (the job cancelled): the script stops too
        status = self._process.returncode
        if status in STOPPED and task.cluster == "slurm":
            time.sleep(GRACE_S)  # the cluster stops the job: its requeue signal or SIGKILL comes
        if status or task.global_rank:
            return {"status": status, "result": None}
        result = json.loads(last_line(os.path.join(self.folder, STDOUT)))
        result.update(command=self.command,
                      seconds=round(self.seconds + time.monotonic() - self._start, 1))
        write_json(result, os.path.join(self.folder, RESULT))
        return {"status": 0, "result": result}

    def _stop(self):
        """Stop a script still running: a moment to end on its own (the signal that stops the
        job may have reached it too), then SIGTERM (it exits with its last epoch saved), SIGKILL
        after ``STOP_S``."""
        process = self._process
        if process is None:
            return
        for wait, stop in ((STOPPING_S, process.terminate), (STOP_S, process.kill)):
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                stop()

    def checkpoint(self):
        """Called by submitit on the requeue signal: stop the script and requeue this job, which
        then resumes the stage from its last epoch."""
        self._stop()
        if self._start is not None:
            self.seconds += time.monotonic() - self._start
        return submitit.helpers.DelayedSubmission(self)
