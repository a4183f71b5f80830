"""The error boundary of every entry point: each failure ends in one line on stderr.

``run_main`` parses the flags and runs a script's ``main``. Whatever stops it becomes one line
naming the problem and, where the user can act, the fix, with an exit status that tells the
kinds apart:

======  ===========================================================================
status  cause
======  ===========================================================================
2       a problem the user can fix: a flag, a file, the data (``BSQError``), the
        operating system (``OSError``: no space, permission, not a folder, ...),
        memory, the installation (a package that is missing or fails to import, torch
        and torchvision that do not match, a CUDA build without a usable driver or GPU)
130     Ctrl-C (SIGINT)
143     SIGTERM (e.g. a cluster's time limit)
1       a bug: the line says "please report"; ``BSQ_DEBUG=1`` shows the traceback
======  ===========================================================================

Files are written atomically (``utils/store/files.py``), so an interrupted run leaves its last
checkpoint intact and no temporary file; what ``main`` holds until it ends (``at_exit``: the
output folder's lock) is released however it ends.
"""
import errno
import importlib.metadata
import os
import signal
import sys

import torch

from utils.errors import BSQError, exit_scope

EXIT_BUG, EXIT_USAGE, EXIT_SIGINT, EXIT_SIGTERM = 1, 2, 130, 143
DEBUG_ENV = "BSQ_DEBUG"

OS_FIXES = {
    errno.ENOSPC: "free some disk space or write somewhere else",
    errno.EDQUOT: "free some disk space or write somewhere else",
    errno.EACCES: "check its permissions or pick another path",
    errno.EPERM: "check its permissions or pick another path",
    errno.EROFS: "the file system is read-only: pick another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: pick another path",
    errno.EISDIR: "it is a folder: give a file",
    errno.ENOENT: "check the path",
    errno.ENAMETOOLONG: "shorten the path",
}
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTALL = ("reinstall torch and torchvision together from the index of your build, e.g. pip "
           "install --force-reinstall torch torchvision --index-url "
           "https://download.pytorch.org/whl/cpu, then pip install -r requirements.txt (README, "
           "Install)")
CUDA_FAILURES = ("no nvidia driver", "driver version is insufficient", "no kernel image",
                 "busy or unavailable", "driver initialization failed",
                 "not compiled with cuda enabled", "cudnn_status_not_initialized")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like ``KeyboardInterrupt`` is for SIGINT."""


def _terminate(signum, frame):
    raise Terminated()


def describe_os_error(e):
    """``path: reason: fix`` for an ``OSError``."""
    where = f"{e.filename}: " if e.filename else ""
    reason = e.strerror or str(e) or type(e).__name__
    return f"{where}{reason}: {OS_FIXES.get(e.errno, 'check the path and the disk')}"


def _one_line(text):
    return " ".join(str(text).split())[:300]


def _ours(path):
    """Whether the file ``path`` is this repository's code (not an installed package)."""
    if not path:
        return False
    path = os.path.abspath(path)
    return path.startswith(REPO + os.sep) and "-packages" + os.sep not in path[len(REPO):]


def _package(module):
    """The installed package a module name belongs to, or None for this repository's."""
    top = (module or "").partition(".")[0]
    found = sys.modules.get(top)
    if not top or top == "__main__" or (found and _ours(getattr(found, "__file__", None))):
        return None
    return top


def _versions():
    """``torch X with torchvision Y``, the versions installed."""
    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "(not installed)"
    return f"torch {version('torch')} with torchvision {version('torchvision')}"


def _failed_import(e):
    """The installed package whose import raised ``e``, or None: the outermost module body on
    the traceback that is not this repository's (so a bug of ours is not taken for one)."""
    tb = e.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "<module>" and not _ours(frame.f_code.co_filename):
            package = _package(frame.f_globals.get("__name__"))
            if package:
                return package
        tb = tb.tb_next
    if isinstance(e, ImportError) and not _ours(e.path):
        return _package(e.name)
    return None


def describe_environment_error(e):
    """``problem: fix`` when ``e`` comes from the installation rather than from this code: a
    package that is missing or fails to import (torchvision built for another torch), a CUDA
    build without a usable driver or GPU; else None."""
    missing = _package(e.name) if isinstance(e, ModuleNotFoundError) else None
    if missing:
        return f"{missing} is not installed ({_one_line(e)}): pip install -r requirements.txt"
    package = _failed_import(e)
    if package in ("torch", "torchvision"):
        return (f"importing {package} failed ({type(e).__name__}: {_one_line(e)}): "
                f"{_versions()} do not work together: {INSTALL}")
    if package:
        return (f"importing {package} failed ({type(e).__name__}: {_one_line(e)}): the "
                f"installation is broken: reinstall {package} (pip install --force-reinstall "
                f"{package}, or pip install -r requirements.txt)")
    message = str(e).lower()
    if isinstance(e, (RuntimeError, AssertionError)) and any(s in message for s in CUDA_FAILURES):
        return (f"CUDA cannot be used here ({_one_line(e)}): install the PyTorch build that "
                "matches this machine's driver and GPU (README, Install), or run on the CPU "
                "with CUDA_VISIBLE_DEVICES= (or --gpu-id '')")
    return None


def fail(message, status):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def run_main(main, parser, argv=None, interrupted=None):
    """Parse ``argv`` with ``parser`` and run ``main(args)`` inside the error boundary.

    ``interrupted(args)`` returns what to tell the user after Ctrl-C or SIGTERM (for the
    training scripts: which epoch was saved and the ``--resume`` command).
    """
    args = parser.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # each line out at once, also into a file or a pipe
        sys.stdout.reconfigure(line_buffering=True)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with exit_scope():
            return main(args)
    except BSQError as e:
        fail(str(e), EXIT_USAGE)
    except (KeyboardInterrupt, Terminated) as e:
        status = EXIT_SIGINT if isinstance(e, KeyboardInterrupt) else EXIT_SIGTERM
        fail(interrupted(args) if interrupted else "interrupted", status)
    except torch.cuda.OutOfMemoryError:
        fail("the GPU ran out of memory: lower --train-batch / --test-batch", EXIT_USAGE)
    except MemoryError:
        fail("out of memory: lower --train-batch / --test-batch", EXIT_USAGE)
    except Exception as e:
        environment = describe_environment_error(e)
        if isinstance(e, OSError) and not environment:
            fail(describe_os_error(e), EXIT_USAGE)
        if os.environ.get(DEBUG_ENV):
            raise
        if environment:
            fail(environment, EXIT_USAGE)
        fail(f"unexpected {type(e).__name__}: {_one_line(e)} (a bug: please report it with the "
             f"command line; {DEBUG_ENV}=1 shows the traceback)", EXIT_BUG)
    finally:
        signal.signal(signal.SIGTERM, previous)
