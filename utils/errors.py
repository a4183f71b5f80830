"""Errors a user can fix: reported as one line on stderr with exit status 2, no traceback."""
import sys

EXIT_USAGE = 2


class BSQError(Exception):
    """Base class of the errors whose message names the problem and the fix."""


def run_main(main, parser, argv=None):
    """Parse ``argv`` with ``parser`` and run ``main(args)``; a ``BSQError`` exits with status 2."""
    args = parser.parse_args(argv)
    try:
        return main(args)
    except BSQError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
