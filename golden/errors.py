"""One error type for bad user input, and the CLI wrapper that turns it into a one-line message."""
from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading


class UserError(Exception):
    """Bad input from the user (a file, a flag, a shape): reported in one line, exit code 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` and cleanup handler runs."""


def _on_sigterm(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While the command runs (main thread only), SIGTERM raises :class:`Terminated` instead of killing at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # pragma: no cover - no signals here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _one_line(text) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else ""


def cli_main(func):
    """Decorate a ``main(argv)``: bad input becomes one line on stderr and exit 2, never a traceback.

    ``UserError``, a missing file and any other ``OSError`` (a folder where a file is expected, a path that cannot
    be written, ...) exit 2; running out of memory (a file that claims a huge array) exits 2; Ctrl-C exits 130 and
    SIGTERM 143, both after the cleanup handlers (``finally``, :func:`golden.files.atomic_output`) have run.
    """

    @functools.wraps(func)
    def wrapper(argv=None):
        try:
            with _sigterm_as_interrupt():
                return func(argv)
        except UserError as exc:
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            raise SystemExit(2) from None
        except FileNotFoundError as exc:
            print(f"error: file not found: {exc.filename or _one_line(exc)}", file=sys.stderr)
            raise SystemExit(2) from None
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            print(f"error: {exc.strerror or _one_line(exc) or type(exc).__name__}{where}", file=sys.stderr)
            raise SystemExit(2) from None
        except MemoryError:
            print("error: out of memory (does an input file claim a huge array?)", file=sys.stderr)
            raise SystemExit(2) from None
        except Terminated:
            print("terminated", file=sys.stderr)
            raise SystemExit(143) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
