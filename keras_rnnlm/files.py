"""How keras_rnnlm writes files: whole or not at all.

Every file is written to a temporary name beside its target, flushed to the disk and
renamed into place, so a run killed at any moment leaves the old file or the new one,
never a part. :func:`write_atomically` writes bytes or text; :func:`written_atomically`
hands a temporary path to a library that writes files itself (Keras' ``model.save``,
Matplotlib's ``savefig``, NumPy's ``savez``); :func:`written_folder` does the same for a
whole folder (a SavedModel). Temporary names end in ``.keras_rnnlm-partial`` (before the
file's own suffix, which some writers read), so they can never be taken for a user's file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

PARTIAL = "keras_rnnlm-partial"
# What a temporary file or folder of keras_rnnlm is called: a kill can leave one behind.
PARTIAL_NAME = re.compile(rf"\..+\.{re.escape(PARTIAL)}(\.\w+)?")


def temporary_path(path: Path) -> Path:
    """The temporary name ``path`` is written under: ``.<stem>.keras_rnnlm-partial<suffix>``."""
    return path.with_name(f".{path.stem}.{PARTIAL}{path.suffix}")


def write_atomically(path: str | Path, data: bytes | str) -> None:
    """Writes ``data`` (text as UTF-8) to ``path``: ``path`` holds the old content or the
    new, never a part."""
    with written_atomically(Path(path)) as temporary, open(temporary, "wb") as file:
        file.write(data.encode("utf-8") if isinstance(data, str) else data)


@contextlib.contextmanager
def written_atomically(path: Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` to write the file to; when the block ends,
    the file is flushed to the disk and renamed to ``path``. If the block fails, the
    temporary file is removed and ``path`` is left as it was."""
    temporary = temporary_path(path)
    try:
        yield temporary
        with open(temporary, "rb") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def written_folder(path: Path) -> Iterator[Path]:
    """Yields a new empty folder beside ``path`` to write a folder's files into; when the
    block ends, it takes ``path``'s place (an earlier folder there is removed once the new
    one is in place). If the block fails, the new folder is removed and ``path`` is left
    as it was. The caller has checked that ``path``, if it exists, holds only its own files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=f".{PARTIAL}", dir=path.parent))
    try:
        yield temporary
        if path.exists():
            old = temporary.with_name(f".{path.name}.old.{PARTIAL}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(temporary, path)
            shutil.rmtree(old)
        else:
            os.replace(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
