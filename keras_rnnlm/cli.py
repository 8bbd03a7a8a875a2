"""What every command-line entry point shares: logging to stderr and friendly errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from keras_rnnlm.errors import RnnlmError


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Runs ``main(argv)``: an :class:`RnnlmError` prints ``error: ...`` and returns 2,
    Ctrl-C returns 130; anything else is a bug and keeps its traceback.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    try:
        return main(argv) or 0
    except RnnlmError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

