"""Running a command: ``python -m keras_rnnlm.<command>`` calls :func:`main`.

:func:`main` checks the command's arguments first (:mod:`keras_rnnlm.arguments`, which
needs no TensorFlow), and only then imports the command's module and calls its ``main``:
a mistake is one line in a fraction of a second. :func:`run` turns a
:class:`~keras_rnnlm.errors.RnnlmError` into that line and exit status 2, logs to stderr,
and keeps TensorFlow's start-up notices off the terminal (:mod:`keras_rnnlm.notices`).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Callable

from keras_rnnlm import arguments
from keras_rnnlm.errors import RnnlmError, printable
from keras_rnnlm.notices import tensorflow_notices_dropped


def main(command: str, argv: list[str] | None = None) -> int:
    """Runs ``python -m keras_rnnlm.<command>`` under :func:`run`: checks the arguments
    with ``keras_rnnlm.arguments.<command>``, then imports ``keras_rnnlm.<command>`` and
    calls its ``main`` with what was checked.

    Args:
        command: "train", "generate", "evaluate", "export", "prepare", "launch" or "tune".
        argv: The arguments; None reads ``sys.argv``.

    Returns:
        The exit status: 0, 2 for a mistake, 130 for Ctrl-C.
    """
    check = getattr(arguments, command)

    def checked_then_run(argv):
        checked = check(argv)
        return importlib.import_module(f"keras_rnnlm.{command}").main(checked)

    return run(checked_then_run, argv)


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Runs ``main(argv)``: an :class:`RnnlmError` prints ``error: ...`` and returns 2, as
    does an ``OSError`` no check foresaw (a disk that fills up meanwhile); Ctrl-C returns
    130; anything else is a bug and keeps its traceback.
    """
    arguments = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in arguments or os.environ.get("KERAS_RNNLM_VERBOSE", "") not in ("", "0")
    # TensorFlow's C++ logs once it is up: errors only, unless verbose (or the user chose).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")
    root, tensorflow_logger = logging.getLogger(), logging.getLogger("tensorflow")
    handlers, level, tensorflow_level = root.handlers[:], root.level, tensorflow_logger.level
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    # TensorFlow's Python log, warnings up, unless verbose: its INFO lines (a
    # distribution strategy's set-up, one line per all-reduce it builds) are for its developers.
    tensorflow_logger.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        with contextlib.nullcontext() if verbose else tensorflow_notices_dropped():
            try:
                return main(argv) or 0
            except RnnlmError as error:
                print(f"error: {printable(str(error), line_breaks=False)}", file=sys.stderr)
                return 2
            except OSError as error:  # the disk full, a folder gone meanwhile: the system's words, in one line
                where = f" ({error.filename})" if error.filename else ""
                message = f"{error.strerror or error}{where}; check the path, its permissions and the disk's room"
                print(f"error: {printable(message, line_breaks=False)}", file=sys.stderr)
                return 2
            except KeyboardInterrupt:
                print("interrupted", file=sys.stderr)
                return 130
    finally:  # a caller's logging as it was (a handler left on this sys.stderr would outlive it in tests)
        root.handlers[:] = handlers
        root.setLevel(level)
        tensorflow_logger.setLevel(tensorflow_level)
