"""The project's base error, and what a run holds until it ends: imports nothing of the project,
so that every module may use it.

A ``BSQError``'s message names the problem and the fix; the entry points' error boundary
(``utils/cli/errors.py``, ``run_main``) prints it as one line. ``at_exit`` registers what the
running entry point releases however it ends (the output folder's lock).
"""
import contextlib

_exit_stack = contextlib.ExitStack()  # what the innermost exit_scope releases when it ends


class BSQError(Exception):
    """Base class of the errors whose message names the problem and the fix."""


def at_exit(callback, *args):
    """Call ``callback(*args)`` when the running entry point ends, however it ends."""
    _exit_stack.callback(callback, *args)


@contextlib.contextmanager
def exit_scope():
    """A scope for ``at_exit``: what is registered inside is released when it ends (scopes
    nest, as ``run_main`` may run inside ``run_main``)."""
    global _exit_stack
    outer, _exit_stack = _exit_stack, contextlib.ExitStack()
    try:
        with _exit_stack:
            yield
    finally:
        _exit_stack = outer
