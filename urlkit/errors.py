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

* urlkit's own error classes (:data:`ERROR_CLASSES`: ``DataError``, ``ModelLoadError``,
  ``NonFiniteError``, ``LossInputError``, ``CacheBuildError``, ``GridError``, and
  :class:`ConfigError`);
* a ``FileNotFoundError`` / ``NotADirectoryError`` / ``IsADirectoryError`` /
  ``PermissionError`` with a file name (the message names the file, wherever it was raised);
* a ``ValueError`` or ``KeyError`` raised by urlkit's own code (the innermost frame of its
  traceback lies inside the ``urlkit`` package), i.e. a check written for users. The same
  classes raised inside torch or transformers are bugs and keep their traceback.

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
from pathlib import Path

EXIT_BAD_INPUT = 2  # argparse's status for bad arguments; Hydra's own errors exit with 1
EXIT_INTERRUPTED = 128 + 15  # the shell's status for a process ended by SIGTERM (pre-emption)

_PACKAGE_DIR = Path(__file__).resolve().parent


class UrlkitError(Exception):
    """Bad input the user can fix: the base class of urlkit's own errors. Its message names
    the config key, file, line or path at fault; :func:`reported_errors` prints it as one
    line instead of a traceback."""


class ConfigError(UrlkitError, ValueError):
    """A config value urlkit cannot run with; the message names the key, the value and
    what is allowed (see :mod:`urlkit.config`)."""


# urlkit's error classes, by module: an error can only be an instance of a class whose module
# is imported, so looking them up in sys.modules never imports torch just to print a message.
ERROR_CLASSES = (
    ("urlkit.data.format", "DataError"),
    ("urlkit.model.backbone", "ModelLoadError"),
    ("urlkit.training.nonfinite", "NonFiniteError"),
    ("urlkit.loss.inputs", "LossInputError"),
    ("urlkit.model.gguf_cache", "CacheBuildError"),
    ("urlkit.grids", "GridError"),
)


def user_error_classes() -> tuple[type[BaseException], ...]:
    """:class:`ConfigError` and the error classes of the urlkit modules loaded so far."""
    loaded = [getattr(sys.modules[module], name, None) for module, name in ERROR_CLASSES if module in sys.modules]
    return (ConfigError, *(cls for cls in loaded if cls is not None))


FILE_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def raised_in_urlkit(err: BaseException) -> bool:
    """Whether the innermost frame of ``err``'s traceback is urlkit's own code."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return False
    return Path(frames[-1].filename).resolve().is_relative_to(_PACKAGE_DIR)


def is_user_error(err: BaseException) -> bool:
    """Bad input the user can fix (see the module docstring), as opposed to a bug."""
    if isinstance(err, user_error_classes()):
        return True
    if isinstance(err, FILE_ERRORS):
        return err.filename is not None or raised_in_urlkit(err)
    return isinstance(err, (ValueError, KeyError)) and raised_in_urlkit(err)


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
