"""One error type for bad user input, and the CLI wrapper that turns it into a one-line message."""
from __future__ import annotations

import functools
import sys


class UserError(Exception):
    """Bad input from the user (a file, a flag, a shape): reported in one line, exit code 2."""


def cli_main(func):
    """Decorate a ``main(argv)``: a ``UserError`` (or a missing file) becomes one line on stderr and exit 2."""

    @functools.wraps(func)
    def wrapper(argv=None):
        try:
            return func(argv)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except FileNotFoundError as exc:
            print(f"error: file not found: {exc.filename or exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
