"""A stand-in SLURM on one machine, for tests: ``sbatch``, ``srun``, ``sacct``, ``scancel`` and
``scontrol requeue`` as submitit calls them (a test driver, not part of the package).

    python tests/fake_slurm.py install BIN   # BIN/sbatch, BIN/srun, ... call this file

The state lives in ``$FAKE_SLURM`` (a folder): ``log`` (one line per command run), and per job
``JOB/script.sh`` (the sbatch script as submitted), ``JOB/state``, ``JOB/steps`` (the process
groups of its ``srun`` steps, which receive its signals, as a job's processes do on a cluster).
``sbatch`` runs the script in the background at once, or leaves it PENDING with
``$FAKE_SLURM_HOLD`` set; ``scontrol requeue`` makes it run again when it exits; ``scancel``
(without ``--signal``) sends SIGTERM to its steps and SIGKILL ``$FAKE_SLURM_KILLWAIT`` seconds
later (default 2).
"""
import fcntl
import os
import signal
import subprocess
import sys
import time

STATE = os.environ.get("FAKE_SLURM", "")
COMMANDS = ("sbatch", "srun", "sacct", "scancel", "scontrol")


def job_dir(job_id):
    return os.path.join(STATE, str(job_id))


def read(job_id, name, default=""):
    try:
        with open(os.path.join(job_dir(job_id), name)) as f:
            return f.read().strip()
    except OSError:
        return default


def write(job_id, name, text, mode="w"):
    with open(os.path.join(job_dir(job_id), name), mode) as f:
        f.write(text)


def log(*words):
    with open(os.path.join(STATE, "log"), "a") as f:
        f.write(" ".join(words) + "\n")


def install(folder):
    os.makedirs(folder, exist_ok=True)
    for name in COMMANDS:
        path = os.path.join(folder, name)
        with open(path, "w") as f:
            f.write(f'#!/bin/sh\nexec {sys.executable} {os.path.abspath(__file__)} {name} "$@"\n')
        os.chmod(path, 0o755)


def sbatch(script):
    with open(os.path.join(STATE, "next_id"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        job_id = int(f.read() or "1000")
        f.seek(0)
        f.truncate()
        f.write(str(job_id + 1))
    os.makedirs(job_dir(job_id))
    with open(script) as f:
        text = f.read()
    write(job_id, "script.sh", text)
    write(job_id, "state", "PENDING")
    log("sbatch", str(job_id), script)
    if not os.environ.get("FAKE_SLURM_HOLD"):
        subprocess.Popen([sys.executable, __file__, "run", str(job_id)], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    print(f"Submitted batch job {job_id}")


def option(lines, name):
    prefix = f"#SBATCH --{name}="
    return next((line[len(prefix):] for line in lines if line.startswith(prefix)), None)


def run(job_id):
    """The job: its script, again after each ``scontrol requeue``."""
    lines = read(job_id, "script.sh").splitlines()
    env = {**os.environ, "SLURM_JOB_ID": str(job_id), "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
           "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1",
           "SLURM_JOB_NODELIST": "localhost"}
    while not read(job_id, "cancelled"):
        write(job_id, "state", "RUNNING")
        out = option(lines, "output").replace("%j", str(job_id))
        err = (option(lines, "error") or out).replace("%j", str(job_id))
        with open(out, "a") as stdout, open(err, "a") as stderr:
            status = subprocess.call(["bash", job_dir(job_id) + "/script.sh"], env=env,
                                     stdout=stdout, stderr=stderr)
        if read(job_id, "cancelled"):
            write(job_id, "state", "CANCELLED")
            return
        if read(job_id, "requeue"):
            os.unlink(os.path.join(job_dir(job_id), "requeue"))
            write(job_id, "state", "REQUEUED")
            time.sleep(0.5)
            continue
        write(job_id, "state", "COMPLETED" if status == 0 else "FAILED")
        return
    write(job_id, "state", "CANCELLED")


def srun(args):
    """A job step: the command with its output in the files named, in its own process group."""
    paths = {}
    while args and args[0].startswith("--"):
        name = args.pop(0)
        if name in ("--output", "--error"):
            paths[name] = args.pop(0)
    job_id = os.environ["SLURM_JOB_ID"]
    os.setpgid(0, 0)
    write(job_id, "steps", f"{os.getpgid(0)}\n", "a")
    if read(job_id, "cancelled"):
        sys.exit(1)
    for fd, name in ((1, "--output"), (2, "--error")):
        if name in paths:
            path = paths[name].replace("%j", job_id).replace("%t", "0")
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), fd)
    os.execvp(args[0], args)


def signal_steps(job_id, signum):
    for pgid in read(job_id, "steps").split():
        try:
            os.killpg(int(pgid), signum)
        except OSError:
            pass


def scancel(args):
    log("scancel", *args)
    name = next((a for a in args if a.startswith("--signal")), None)
    if name is not None:
        value = name.partition("=")[2] or args[args.index(name) + 1]
        job_id = next(a for a in args if a.isdigit())
        sig = value if value.startswith("SIG") else "SIG" + value
        signal_steps(job_id, getattr(signal, sig))
        return
    for job_id in args:
        if read(job_id, "state") == "PENDING":
            write(job_id, "state", "CANCELLED")
            continue
        write(job_id, "cancelled", "1")
        signal_steps(job_id, signal.SIGTERM)
        subprocess.Popen([sys.executable, __file__, "kill", job_id], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)


def sacct(args):
    ids = [args[i + 1] for i, a in enumerate(args) if a == "-j"]
    print("JobID|State|NodeList")
    for job_id in ids:
        state = read(job_id, "state")
        if state:
            print(f"{job_id}|{state}|localhost")


def main(command, args):
    if command == "install":
        return install(args[0])
    if command == "run":
        return run(args[0])
    if command == "kill":
        time.sleep(float(os.environ.get("FAKE_SLURM_KILLWAIT", "2")))
        return signal_steps(args[0], signal.SIGKILL)
    if command == "sbatch":
        return sbatch(args[-1])
    if command == "srun":
        return srun(args)
    if command == "sacct":
        return sacct(args)
    if command == "scancel":
        return scancel(args)
    if command == "scontrol" and args[0] == "requeue":
        log("scontrol", *args)
        return write(args[1], "requeue", "1")
    sys.exit(f"fake_slurm: {command} {' '.join(args)}: not supported")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
