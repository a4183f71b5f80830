"""Writing files so that no run is lost: atomically, durably, with ordinary permissions, and
JSON that strict parsers accept.

Every file the scripts write (checkpoints, ``log.txt`` rewrites, JSON, packed models) goes
through ``atomic_write``. A temporary file in the target's folder is written, flushed to disk and
renamed over the target, so a crash at any moment leaves the previous file or the new one, never
a torn one; an interrupted write removes its temporary file, and ``remove_stale_temps`` removes
those a killed process left behind. Errors are ``OSError``s naming the target path.
"""
import contextlib
import json
import math
import os
import tempfile

TEMP_PREFIX = ".tmp-"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file; mkstemp gives 0600


def atomic_write(path, data):
    """Write the bytes (or str) ``data`` to ``path`` atomically and durably (``atomic_writer``)."""
    if isinstance(data, str):
        data = data.encode()
    with atomic_writer(path) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_writer(path):
    """A binary file to write ``path``'s new content into, atomically and durably.

    Temporary file in the target's folder, fsync, rename, fsync of the folder; streamed, so a
    file of any size takes no memory. Raises ``OSError`` with ``filename`` set to ``path`` (disk
    full, permission, a folder that does not exist, ...), also when the writer in the ``with``
    block turned the file's ``OSError`` into another exception (``torch.save`` does): the
    temporary file is then removed.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=os.path.basename(path), dir=folder)
        with os.fdopen(fd, "wb") as raw:
            f = _Recording(raw)
            try:
                yield f
            except Exception:
                if f.error is not None:  # the file's own error, which the writer wrapped
                    raise f.error from None
                raise
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
        _fsync_folder(folder)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename != path:
            raise OSError(e.errno, e.strerror, path) from None
        raise


class _Recording:
    """A file whose ``write`` keeps the ``OSError`` it raises, for ``atomic_writer``."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name):
        return getattr(self.f, name)


def _fsync_folder(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temps(folder):
    """Delete the temporary files that a process killed in ``atomic_write`` left in ``folder``."""
    for name in os.listdir(folder):
        if name.startswith(TEMP_PREFIX):
            os.unlink(os.path.join(folder, name))


def strict(obj):
    """``obj`` with every non-finite float replaced by None: what strict JSON can hold.

    A null in our JSON means "not defined", e.g. the compression of a model without any bit.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def json_text(obj, indent=None):
    """``obj`` as strict JSON (RFC 8259: no NaN or Infinity), non-finite floats as null."""
    return json.dumps(strict(obj), indent=indent, allow_nan=False)


def write_json(obj, path):
    """Write ``obj`` as indented strict JSON to ``path``, atomically."""
    atomic_write(path, json_text(obj, indent=1) + "\n")
