"""User mistakes versus bugs: what the command line prints as one ``error:`` line and what it shows as a traceback.

A user mistake (a bad option value, a bad input file, a missing checkpoint, a refused overwrite) is worth one
line that names the culprit, not 60 lines of traceback: :func:`user_error` decides which an exception is.
Tracebacks stay for bugs, and for everything when ``LMSHRINK_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DEBUG_ENV = "LMSHRINK_DEBUG"


class UserError(Exception):
    """A mistake in the user's options or inputs; the message names the option, file, column or row."""


class OptionError(UserError, ValueError):
    """An option value that cannot work (out of range, ignored by the chosen method, inconsistent)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse for lmshrink's ``python -m`` commands: its own mistakes (an unknown or misspelt flag, a bad type, a
    missing argument) become an :class:`OptionError` naming the flag, so the command prints one ``error:`` line
    like every other mistake instead of the usage block (and a caller that checks arguments can catch it)."""

    def error(self, message: str):
        raise OptionError(f"{message} (see {self.prog} --help)")


class InputFileError(UserError, ValueError):
    """A data or model file that cannot be read as it is; the message names the file (and line or row)."""


class MissingInputError(UserError, FileNotFoundError):
    """A file, directory, checkpoint or hub id that is not there (offline and not cached included)."""


class OutputExistsError(UserError, FileExistsError):
    """An output that would overwrite an earlier run's files; nothing was written."""


# Exceptions lmshrink raises deliberately with a message naming the culprit; raised from lmshrink's own code
# they are user errors (a bug surfaces as these from library code, or as another type).
_DELIBERATE = (ValueError, KeyError, FileNotFoundError, FileExistsError, NotADirectoryError, ModuleNotFoundError)


def _raised_by_lmshrink(exc: BaseException) -> bool:
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE_DIR)


def user_error(exc: BaseException) -> BaseException | None:
    """The user mistake behind ``exc`` (following ``raise ... from`` and wrapping by jsonargparse), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UserError) or (isinstance(exc, _DELIBERATE) and _raised_by_lmshrink(exc)):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def message(exc: BaseException) -> str:
    """The exception's text without KeyError's quotes."""
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run_command(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """``main(argv)`` with a user mistake printed as one ``error:`` line (exit code 2), as ``train.py`` does; a bug
    (or anything with ``LMSHRINK_DEBUG=1``) keeps its traceback. Third-party start-up noise is silenced first."""
    from lmshrink.quiet import quiet_third_party

    quiet_third_party()
    try:
        return main(argv)
    except Exception as exc:
        mistake = user_error(exc)
        if mistake is None or debug():
            raise
        print(f"error: {message(mistake)}", file=sys.stderr, flush=True)
        return 2


def at_least_one(text: str) -> int:
    """An ``argparse`` type for counts (rounds, repeats, steps, samples): an integer >= 1, else argparse's own one
    ``error:`` line naming the option (exit 2) before any work, instead of a traceback from an empty median."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be >= 1")
    return value
