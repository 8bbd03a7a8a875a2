"""TensorFlow's start-up notices, kept off the terminal.

TensorFlow's C++ runtime prints notices to file descriptor 2 before its logging is set
up, so ``TF_CPP_MIN_LOG_LEVEL`` does not reach them: that oneDNN is on, that no CUDA
driver or GPU was found ("failed call to cuInit", which reads like a failure on every
CPU-only run), which CPU instructions the binary could use. :func:`keras_rnnlm.cli.run` passes
everything written to descriptor 2 through a filter that drops exactly those lines and
forwards every other one as it comes, so a real error or warning still shows.
Once TensorFlow's logging is up, its C++ log level is errors only (``TF_CPP_MIN_LOG_LEVEL=2``:
what it warns about at level 1, such as tf.data declining to optimize an input, needs no
action here). ``--verbose`` or ``KERAS_RNNLM_VERBOSE=1`` turns the filter off and the level
to everything; a ``TF_CPP_MIN_LOG_LEVEL`` the user set is kept.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
import threading
from collections.abc import Iterator

# TensorFlow's start-up and device notices that say nothing a user can act on.
NOTICES = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|oneDNN custom operations are on"
    rb"|Could not find cuda drivers on your machine"
    rb"|failed call to cuInit"
    rb"|This TensorFlow binary is optimized to use available CPU instructions"
    rb"|^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"
    rb"|oneDNN supports DT_\w+ only on platforms with AVX-512"
    rb"|Unable to register cu(DNN|FFT|BLAS) factory"
    rb"|TF-TRT Warning: Could not find TensorRT"
)


@contextlib.contextmanager
def tensorflow_notices_dropped() -> Iterator[None]:
    """Passes file descriptor 2 through a thread that drops the lines :data:`NOTICES`
    matches and forwards every other line at once. Does nothing where descriptor 2 cannot
    be replaced (an embedding program that closed it)."""
    try:
        original = os.dup(2)
    except OSError:
        yield
        return
    read_end, write_end = os.pipe()
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    global _original_stderr
    _original_stderr = original
    stop = threading.Event()
    forwarder = threading.Thread(target=_forward_lines, args=(read_end, original, stop), daemon=True)
    forwarder.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes this process' write end of the pipe
        # Processes started meanwhile (multiprocessing's resource tracker, which outlives
        # the encoding workers) may still hold a write end, so the end of the pipe never
        # comes: the forwarder stops once the pipe has nothing more to read.
        stop.set()
        forwarder.join(timeout=5)
        _original_stderr = None
        os.close(original)


_original_stderr: int | None = None  # descriptor 2 as it was before the filter, while it runs


def unfiltered_stderr() -> int:
    """The descriptor of the terminal's (or log's) standard error: past the filter, for
    a process that may have to write while this one cannot run Python (see
    :func:`keras_rnnlm.multiworker.join_cluster`)."""
    return _original_stderr if _original_stderr is not None else 2


def _forward_lines(read_end: int, destination: int, stop: threading.Event) -> None:
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        pending = b""
        while True:
            readable, _, _ = select.select([pipe], [], [], 0.05)
            if not readable:
                if stop.is_set():
                    break
                continue
            chunk = pipe.read(65536)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if not NOTICES.search(line):
                    os.write(destination, line + b"\n")
            if pending and not NOTICES.search(pending) and len(pending) > 65536:
                os.write(destination, pending)  # a very long unterminated write: pass it on
                pending = b""
        if pending and not NOTICES.search(pending):
            os.write(destination, pending)
