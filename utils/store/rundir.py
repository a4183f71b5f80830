"""A run's ``--checkpoint`` folder: checked before any work, held by one run at a time.

``check_run`` (before any work: before a model or the data is loaded) takes the lock of a folder
that exists, so that a second run on it is refused at once with the PID of the first; refuses a
folder that holds another run, unless ``--overwrite`` is given or ``--resume`` continues that run;
and checks a ``--resume``: the checkpoint is readable, its run's flags are this command's, its
``log.txt`` can be continued. ``open_run`` (right before the first write) creates the folder,
takes its lock if it is not held yet, removes the temporary files of a killed save and, with
``--overwrite``, the earlier run's files. The lock is a ``.lock`` file held with ``flock``; it
goes when the run ends, however it ends, so a run that fails before its first write leaves the
folder as it was.
"""
import contextlib
import errno
import fcntl
import os

from utils.errors import BSQError, at_exit
from utils.names import option
from utils.ranks import is_main
from utils.store.checkpoint import CheckpointError, load_checkpoint
from utils.store.epochlog import check_log
from utils.store.files import FILE_MODE, remove_stale_temps

RUN_FILES = ("checkpoint.pth.tar", "model_best.pth.tar", "log.txt", "best_bin.pth.tar",
             "best_float.pth.tar", "scheme.json")
LOCK = ".lock"
RESUME_FLAGS = ("arch", "depth", "dataset", "act", "loader", "train_batch", "schedule", "gamma",
                "momentum", "wd", "L1", "Prun_Int", "thre", "amp", "model", "manualSeed",
                "corrected")  # what a resumed run must share with the run it continues
CHANGEABLE = ("lr", "decay")  # what a resumed run may change (after a non-finite loss)
_held = {}  # the real path of each folder this process holds -> the descriptor of its lock


def _shown(value):
    return " ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def _resuming_into(args):
    """Whether ``--resume`` continues the run held in ``--checkpoint``."""
    resume = getattr(args, "resume", "")
    if not resume or not os.path.isdir(args.checkpoint):
        return False
    return os.path.samefile(os.path.dirname(os.path.abspath(resume)), args.checkpoint)


def check_writable(folder, given=None):
    """``folder`` exists as a writable folder or can be created (nothing is created here);
    ``given``: what the user passed, as ``--flag value`` (default ``--checkpoint folder``)."""
    given = given or f"--checkpoint {folder}"
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise BSQError(f"{given}: {path} is a file, not a folder: pick another path")
    if not os.access(path, os.W_OK | os.X_OK):
        raise BSQError(f"{given}: {path} is not writable: pick another path")


def resume_changes(args, ckpt):
    """The ``CHANGEABLE`` flags this ``--resume`` changes, as ``--lr 0.01 (was 0.1)``, or ""."""
    recorded, given = ckpt.get("args") or {}, vars(args)
    return ", ".join(f"{option(d)} {_shown(given[d])} (was {_shown(recorded[d])})"
                     for d in CHANGEABLE if d in recorded and d in given
                     and given[d] != recorded[d])


def check_resume(args, ckpt):
    """A ``--resume`` checkpoint continues this command's run: same flags, epochs left, log."""
    recorded = ckpt.get("args") or {}  # the release's files record no flags
    given = vars(args)
    changed = [dest for dest in RESUME_FLAGS if dest in recorded and dest in given
               and given[dest] not in (None, "") and given[dest] != recorded[dest]]
    if changed:
        was = " ".join(f"{option(d)} {_shown(recorded[d])}" for d in changed)
        now = " ".join(f"{option(d)} {_shown(given[d])}" for d in changed)
        raise BSQError(f"--resume {args.resume} continues a run made with {was}, not {now}: "
                       "resume with that run's flags, or start a new run in another folder")
    epoch = ckpt.get("epoch") or 0
    if epoch > args.epochs:
        raise BSQError(f"--resume {args.resume} has trained {epoch} epochs, more than --epochs "
                       f"{args.epochs}: pass --epochs {epoch} or more")
    check_log(os.path.join(args.checkpoint, "log.txt"))


def check_run(args):
    """Before any work: the ``--checkpoint`` folder can take this run, and is held by it if it
    exists (``hold``); returns the loaded ``--resume`` checkpoint (checked with
    ``check_resume``), or None."""
    check_writable(args.checkpoint)
    if os.path.isdir(args.checkpoint) and os.environ.get("RANK", "0") == "0":  # torchrun: rank 0
        hold(args.checkpoint)
    resume = None
    if getattr(args, "resume", ""):
        resume = load_checkpoint(args.resume)
        check_resume(args, resume)
    held = [name for name in RUN_FILES if os.path.exists(os.path.join(args.checkpoint, name))]
    if held and not args.overwrite and not _resuming_into(args):
        ckpt = os.path.join(args.checkpoint, "checkpoint.pth.tar")
        continued = f"continue it with --resume {ckpt}, " if hasattr(args, "resume") else ""
        raise BSQError(f"--checkpoint {args.checkpoint} already holds a run ({held[0]}): "
                       f"{continued}replace it with --overwrite, or pick another folder")
    return resume


def hold(folder):
    """Take the lock of the existing ``folder`` until ``release(folder)`` or the end of
    ``run_main``; refused (``BSQError`` with its PID) while another run holds it."""
    key = os.path.realpath(folder)
    if key in _held:
        return
    path = os.path.join(folder, LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        pid = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        raise BSQError(f"--checkpoint {folder} is in use by another run (PID {pid}): wait for "
                       "it to end, or pick another folder") from None
    _held[key] = fd
    at_exit(release, folder)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())


def release(folder):
    """Let go of ``folder``'s lock, if this process holds it: its ``.lock`` file goes."""
    fd = _held.pop(os.path.realpath(folder), None)
    if fd is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, LOCK))
        os.close(fd)


@contextlib.contextmanager
def open_run(args):
    """Create and hold ``--checkpoint`` for the duration of the block (rank 0 under torchrun);
    a folder it created that is still empty when the block fails is removed."""
    if not is_main():
        yield
        return
    folder = args.checkpoint
    created = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    hold(folder)
    try:
        remove_stale_temps(folder)
        if args.overwrite and not _resuming_into(args):
            for name in RUN_FILES:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))
        yield
    except BaseException:
        release(folder)
        if created:  # a run that failed before writing anything leaves no folder behind
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise
    finally:
        release(folder)


def interrupted(args):
    """What to do after Ctrl-C or SIGTERM stopped a script that writes ``--checkpoint``."""
    if getattr(args, "evaluate", False) or not hasattr(args, "resume"):
        return "interrupted; files are written atomically, none is torn: run the command again"
    path = os.path.join(args.checkpoint, "checkpoint.pth.tar")
    try:
        epoch = load_checkpoint(path).get("epoch") or 0
    except CheckpointError:
        return "interrupted before the first epoch was saved: run the command again"
    return f"interrupted in epoch {epoch + 1}: resume with --resume {path}"
