"""How urlkit's entry points report bad input: one line, ``error: <message>``, exit status 2.

Bad input (a config value, a path, a data line, a model that cannot be loaded) is the
user's to fix, so it deserves one readable sentence that names the key, file or line, not a
traceback from deep inside a library. Every urlkit error class already carries such a
message; :func:`reported_errors` wraps the work of ``python -m urlkit.run``,
``python -m urlkit.evaluate`` and ``python -m urlkit.inference`` and turns those errors into::

    $ python -m urlkit.run data.path=/nowhere
    error: data.path=/nowhere: no such file or directory
    $ echo $?
    2

What counts as bad input (:func:`is_user_error`):

* an instance of :class:`UrlkitError`, the base class of urlkit's own errors (``ConfigError``,
  ``DataError``, ``ModelLoadError``, ``CacheBuildError``, ``NonFiniteError``, ``GridError``,
  ...): raising one is how urlkit code says "the user can fix this, and the message says how";
* a ``FileNotFoundError`` / ``NotADirectoryError`` / ``IsADirectoryError`` /
  ``PermissionError``: its message names the path looked for.

``urlkit.loss`` is pure torch and imports nothing of urlkit, so its ``LossInputError`` is a
plain ``ValueError`` for whoever calls the loss as a library. Inside urlkit the config reaches
the loss only through :func:`urlkit.build.weight_options` and
:func:`urlkit.build.check_direction`, which turn a ``LossInputError`` into a ``ConfigError``
naming the ``weight``/``direction`` key before the first step; one raised later means urlkit
passed the loss bad tensors, a bug, and keeps its traceback.

Anything else propagates unchanged, with its traceback: it is a bug to report. Set
``HYDRA_FULL_ERROR=1`` (Hydra's own switch) to see the traceback of bad input too; the
``error:`` line and exit status 2 stay the same. Hydra's own errors (an unknown config key,
an unknown option of a config group) are printed by Hydra before urlkit runs, with the
valid options, and exit with status 1.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_BAD_INPUT = 2  # argparse's status for bad arguments; Hydra's own errors exit with 1
EXIT_INTERRUPTED = 128 + 15  # the shell's status for a process ended by SIGTERM (pre-emption)
EXIT_CTRL_C = 128 + 2  # the shell's status for a process ended by SIGINT (Ctrl-C)


class UrlkitError(Exception):
    """Bad input the user can fix: the base class of urlkit's own errors. Its message names
    the config key, file, line or path at fault; :func:`reported_errors` prints it as one
    line instead of a traceback."""


class ConfigError(UrlkitError, ValueError):
    """A config value urlkit cannot run with; the message names the key, the value and
    what is allowed (see :mod:`urlkit.config_checks`)."""


FILE_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def is_user_error(err: BaseException) -> bool:
    """Bad input the user can fix (see the module docstring), as opposed to a bug."""
    return isinstance(err, (UrlkitError, *FILE_ERRORS))


def message_of(err: BaseException) -> str:
    """The one line to print: the exception's message (KeyError's without its quotes)."""
    if isinstance(err, KeyError) and len(err.args) == 1:
        return str(err.args[0])
    return str(err) or type(err).__name__


@contextmanager
def reported_errors() -> Iterator[None]:
    """Run the body; bad input exits with ``error: <message>`` on stderr and status 2."""
    try:
        yield
    except Exception as err:
        if not is_user_error(err):
            raise
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            traceback.print_exc()
        sys.stderr.write(f"error: {message_of(err)}\n")
        sys.stderr.flush()
        sys.stdout.flush()
        raise SystemExit(EXIT_BAD_INPUT) from None
