"""The one error type users can cause.

Every error a user can trigger by their input (a file, an option, a parameter) is a
:class:`CrfmBenchError`. The CLI catches it once and prints a single line naming the file
or option and the problem, with exit code 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class CrfmBenchError(Exception):
    """Base class of user-caused errors. ``str(err)`` is the one line shown to the user."""


class InputError(CrfmBenchError, ValueError):
    """A bad value: a parameter, an option, or a file's content."""


class MissingInputError(CrfmBenchError, FileNotFoundError):
    """A file, directory or contrast that should exist does not."""

    def __str__(self) -> str:  # FileNotFoundError's own __str__ formats errno tuples
        return str(self.args[0]) if self.args else "missing input"


class ServiceError(CrfmBenchError, RuntimeError):
    """A service the run needs (tracking server, Ray cluster, DVC remote) is not usable."""
