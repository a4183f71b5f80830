"""The error boundary of every entry point: each failure ends in one line on stderr.

``run_main`` parses the flags and runs a script's ``main``. Whatever stops it becomes one line
naming the problem and, where the user can act, the fix, with an exit status that tells the
kinds apart:

======  ===========================================================================
status  cause
======  ===========================================================================
2       a problem the user can fix: a flag, a file, the data (``BSQError``), the
        operating system (``OSError``: no space, permission, not a folder, ...),
        memory
130     Ctrl-C (SIGINT)
143     SIGTERM (e.g. a cluster's time limit)
1       a bug: the line says "please report"; ``BSQ_DEBUG=1`` shows the traceback
======  ===========================================================================

Files are written atomically (``utils/store/files.py``), so an interrupted run leaves its last
checkpoint intact and no temporary file.
"""
import errno
import os
import signal
import sys

import torch

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


class BSQError(Exception):
    """Base class of the errors whose message names the problem and the fix."""


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
    except OSError as e:
        fail(describe_os_error(e), EXIT_USAGE)
    except Exception as e:
        if os.environ.get(DEBUG_ENV):
            raise
        fail(f"unexpected {type(e).__name__}: {_one_line(e)} (a bug: please report it with the "
             f"command line; {DEBUG_ENV}=1 shows the traceback)", EXIT_BUG)
    finally:
        signal.signal(signal.SIGTERM, previous)
