"""Run a script with a SIGKILL injected at a chosen point (a test driver, not part of the package).

    python tests/faults.py --kill-epoch E --kill-step S SCRIPT ARGS...   # mid-training
    python tests/faults.py --kill-save K SCRIPT ARGS...                 # inside the K-th save

The kill is a real SIGKILL of the process: nothing is flushed or cleaned up, as in a crash.
"""
import argparse
import io
import os
import runpy
import signal
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

import utils.engine  # noqa: E402


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def kill_in_save(k):
    """The k-th ``torch.save`` writes half its bytes, then the process dies."""
    real_save, calls = torch.save, [0]

    def save(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] < k:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        die()

    torch.save = save


def kill_in_epoch(epoch, step):
    """Training epoch ``epoch`` (1-based) dies after ``step`` optimizer steps."""
    real_train = utils.engine.train_one_epoch

    def train(model, loader, train_step, desc="train"):
        if desc != f"epoch {epoch}":
            return real_train(model, loader, train_step, desc)

        def dying():
            for i, batch in enumerate(loader):
                if i == step:
                    die()
                yield batch

        return real_train(model, dying(), train_step, desc)

    utils.engine.train_one_epoch = train


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-epoch", type=int)
    parser.add_argument("--kill-step", type=int, default=1)
    parser.add_argument("--kill-save", type=int)
    parser.add_argument("script")
    opts, rest = parser.parse_known_args()
    if opts.kill_save:
        kill_in_save(opts.kill_save)
    if opts.kill_epoch:
        kill_in_epoch(opts.kill_epoch, opts.kill_step)
    sys.argv = [opts.script, *rest]
    runpy.run_path(opts.script, run_name="__main__")
