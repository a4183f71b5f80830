"""Run a script with a fault injected at a chosen point (a test driver, not part of the package).

    python tests/faults.py --kill-epoch E --kill-step S SCRIPT ARGS...   # mid-training
    python tests/faults.py --kill-save K SCRIPT ARGS...                 # inside the K-th save
    python tests/faults.py --kill-checkpoint K SCRIPT ARGS...           # ... of checkpoint.pth.tar
    python tests/faults.py --disk-full-at-write K SCRIPT ARGS...        # a full disk

A kill is a real SIGKILL of the process: nothing is flushed or cleaned up, as in a crash. A full
disk is an ``OSError(ENOSPC)`` from the file object a checkpoint is written through.
"""
import argparse
import errno
import io
import os
import runpy
import signal
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import utils.train.fit  # noqa: E402


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def kill_in_epoch(epoch, step):
    """Training epoch ``epoch`` (1-based) dies after ``step`` optimizer steps."""
    real_train = utils.train.fit.train_one_epoch

    def train(model, loader, train_step, progress=None, after_step=None):
        if progress is None or progress.epoch + 1 != epoch:
            return real_train(model, loader, train_step, progress, after_step)

        def dying():
            for i, batch in enumerate(loader):
                if i == step:
                    die()
                yield batch

        return real_train(model, dying(), train_step, progress, after_step)

    utils.train.fit.train_one_epoch = train


def on_write(k, suffix, fault):
    """From the k-th file written through ``utils.store.files.atomic_write`` whose name ends with
    ``suffix``, writes go to ``fault(file, data)`` instead."""
    real_mkstemp, real_fdopen = tempfile.mkstemp, os.fdopen
    names, count = {}, [0]

    class FaultyFile(io.FileIO):
        def write(self, data):
            fault(self, data)

    def mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        names[fd] = name
        return fd, name

    def fdopen(fd, mode="r", *args, **kwargs):
        if "w" in mode and names.get(fd, "").endswith(suffix):
            count[0] += 1
            if count[0] >= k:
                return FaultyFile(fd, "wb")
        return real_fdopen(fd, mode, *args, **kwargs)

    tempfile.mkstemp, os.fdopen = mkstemp, fdopen


def half_then_die(f, data):
    """Half the checkpoint reaches the disk, then the process dies."""
    io.FileIO.write(f, bytes(data[: len(data) // 2]))
    os.fsync(f.fileno())
    die()


def disk_full(f, data):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-epoch", type=int)
    parser.add_argument("--kill-step", type=int, default=1)
    parser.add_argument("--kill-save", type=int)
    parser.add_argument("--kill-checkpoint", type=int)
    parser.add_argument("--disk-full-at-write", type=int)
    parser.add_argument("script")
    opts, rest = parser.parse_known_args()
    if opts.kill_save:  # the k-th checkpoint write is torn by a crash
        on_write(opts.kill_save, ".pth.tar", half_then_die)
    if opts.kill_checkpoint:  # the k-th checkpoint.pth.tar write: its epoch is logged, not saved
        on_write(opts.kill_checkpoint, "checkpoint.pth.tar", half_then_die)
    if opts.kill_epoch:
        kill_in_epoch(opts.kill_epoch, opts.kill_step)
    if opts.disk_full_at_write:  # the k-th checkpoint.pth.tar finds the disk full
        on_write(opts.disk_full_at_write, "checkpoint.pth.tar", disk_full)
    sys.argv = [opts.script, *rest]
    runpy.run_path(opts.script, run_name="__main__")
