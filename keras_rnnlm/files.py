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
import fnmatch
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from keras_rnnlm.errors import RnnlmError

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


# Checks of the paths a user gives. ----------------------------------------------------------


def not_a_file(path: Path) -> str:
    """What stands at ``path``, where a file was expected and none is: "does not exist",
    "is a folder", "is a FIFO", "is a device" or "is not a regular file"."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return "does not exist"
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (a named pipe), not a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a file"
    return "is not a regular file"


def check_name(name: str, what: str) -> None:
    """Refuses a name that would not be one folder's name (a run's, a search's): empty, a
    NUL or line break, a "/", "." or "..", or a leading "." (a hidden folder).

    Args:
        name: The name.
        what: How the user gave it, e.g. "--run-name".

    Raises:
        RnnlmError: Saying what is wrong with it.
    """
    problem = ("is empty" if not name else "holds a NUL character" if "\0" in name
               else "holds a line break" if "\n" in name or "\r" in name else "holds a /" if "/" in name
               else "starts with a ." if name.startswith(".") else "")
    if problem:
        raise RnnlmError(f"{what} {name!r} cannot name a folder: it {problem}; use letters, digits, '-', '_' and '.'")


def check_folder_path(path: str | Path, what: str) -> None:
    """Refuses a path where a command will create, or write into, a folder: a NUL or line
    break in it, a file in its place or above it, or a nearest existing folder above it
    that this process may not write in.

    Args:
        path: The folder.
        what: How the user gave it, e.g. "--output-dir".

    Raises:
        RnnlmError: Saying what is wrong and with which path.
    """
    text = str(path)
    if "\0" in text:
        raise RnnlmError(f"{what} {text!r} holds a NUL character; give a plain path")
    if "\n" in text or "\r" in text:
        raise RnnlmError(f"{what} {text!r} holds a line break; give a plain path")
    folder = Path(text)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == folder else f"is under {existing}, which is a file"
        raise RnnlmError(f"{what} {folder} {where}, not a folder; give a folder's path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RnnlmError(f"{what} {folder}: {existing} cannot be written to (permission denied or read-only); "
                         "give a folder you may write to")


# Ownership: which folders, and which files in them, keras_rnnlm wrote. ---------------------

MARKER = ".keras_rnnlm.json"  # in every folder a command creates
LOCK_SUFFIX = ".keras_rnnlm-lock"  # beside a folder a process holds (RunFolder.lock)
LOCK_NAME = re.compile(rf"\..+{re.escape(LOCK_SUFFIX)}")  # a search's trials/ holds its runs' locks

# What each kind of folder holds that keras_rnnlm (or a library on its behalf: TensorBoard,
# a SavedModel, KerasTuner) writes: names relative to the folder, "/"-separated, as
# fnmatch patterns. A folder's marker lists them when it is created, and a folder
# written before markers existed is recognised by them.
LAYOUTS = {
    "run": ("model.keras", "vocabulary.txt", "config.toml", "history.csv", "curves.png", "summary.json",
            "cache.json", "backup/latest.npz", "logs/train/events.out.tfevents.*", "logs/validation/events.out.tfevents.*"),
    "export": ("saved_model.pb", "fingerprint.pb", "README.txt", "variables/variables.index",
               "variables/variables.data-*-of-*", "assets/*"),
    "web export": ("index.html", "rnnlm.js", "model.json", "weights.bin", "README.txt"),
    "prepared corpus": ("manifest.json", "vocabulary.txt", "train-[0-9][0-9][0-9][0-9][0-9].bin",
                        "valid-[0-9][0-9][0-9][0-9][0-9].bin", "train-segments.npy", "valid-segments.npy",
                        "work/ids.u32", "work/types.txt", "work/job.json", "work/state.json"),
    "search": ("tune.json", "trials.csv", "trials.png", "best.toml", "oracle/*", "oracle/*/*", "oracle/*/*/*"),
}
# What says that a folder without a marker was written by an earlier version, as this
# kind: any one of a kind's alternatives, each files that begin with or hold what
# keras_rnnlm wrote into them (a user's config.toml alone is not a run folder).
SIGNATURES = {
    "run": [[("config.toml", b"\n[corpus]\n"), ("vocabulary.txt", b"<pad>\n<unk>\n<eol>\n")]],
    "export": [[("saved_model.pb", b""), ("README.txt", b"A keras_rnnlm language model exported from")]],
    "web export": [],  # always written with a marker
    "prepared corpus": [[("manifest.json", b'"keras_rnnlm prepared corpus"')], [("work/job.json", b'"valid_sources"')]],
    "search": [[("tune.json", b'"strategy"'), ("tune.json", b'"trials"')]],
}
# The temporary files of versions before markers existed: a run killed while saving left one.
EARLIER_TEMPORARIES = (".*.partial", ".*.partial.*", "*/.*.partial", "*/.*.partial.*")
# Folders of another kind that a folder written before markers existed may hold.
NESTED = {"run": {"saved_model": "export"}, "search": {"trials/*": "run", "best": "run", "corpus/*": "prepared corpus"}}


class Owned:
    """A folder a command writes, of one kind ("run", "export", "prepared corpus" or
    "search"), and the rule for what in it is the command's own.

    A file in the folder is keras_rnnlm's when its marker lists its name (a pattern of
    :data:`LAYOUTS`, or a name a command added), when it is a temporary file or lock of
    keras_rnnlm's, or when it lies in a folder inside with a marker of its own that
    claims it (a trial's run folder in a search, an export in a run folder). Anything
    else is the user's: a folder that holds anything of the user's is refused, never
    changed. A folder that keras_rnnlm wrote before markers existed, with no marker, is
    recognised by its kind's layout and given one.

    Args:
        path: The folder.
        kind: What it holds.
    """

    def __init__(self, path: str | Path, kind: str):
        self.path, self.kind = Path(path), kind

    def check(self, fix: str) -> None:
        """Refuses a folder that exists and is not this kind's, wholly: a file where the
        folder goes, another kind's folder, or anything in it keras_rnnlm did not write.
        An empty or absent folder passes.

        Args:
            fix: What the user can do instead, e.g. "choose another --run-name".

        Raises:
            RnnlmError: Naming the path and, for a folder, the first file that is not
                keras_rnnlm's.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RnnlmError(f"{self.path} is a file, not a folder; {fix}")
        if not self.path.is_dir():
            return
        marker = _read_marker(self.path)
        if marker is not None and marker["kind"] != self.kind:
            raise RnnlmError(f"{self.path} holds a keras_rnnlm {marker['kind']}, not a {self.kind}; {fix}")
        foreign = self.first_foreign()
        if foreign is not None:
            raise RnnlmError(f"{self.path} holds {foreign.relative_to(self.path)}, which keras_rnnlm did not write; "
                             f"{fix}, or move that out of the folder")

    def first_foreign(self) -> Path | None:
        """The first file or folder in the folder that is not keras_rnnlm's, or None."""
        try:
            return _first_foreign(self.path, self.kind)
        except OSError as error:
            raise RnnlmError(f"cannot read the folder {self.path} ({error.strerror}); check its permissions") from None

    def holds_anything(self) -> bool:
        """Whether the folder exists and holds any file or folder."""
        try:
            return self.path.is_dir() and any(self.path.iterdir())
        except OSError as error:
            raise RnnlmError(f"cannot read the folder {self.path} ({error.strerror}); check its permissions") from None

    def check_names(self, *names: str) -> None:
        """Refuses to write ``names`` into the folder where one of them is already a file
        keras_rnnlm did not write (the user's, of the same name).

        Raises:
            RnnlmError: Naming the file.
        """
        for name in names:
            path = self.path / name
            if path.exists() and not _owned_file(self.path, self.kind, path):
                raise RnnlmError(f"{path} is a file keras_rnnlm did not write, and this would replace it; "
                                 "move it out of the folder first")

    def claim(self, *names: str) -> None:
        """Creates the folder if needed and writes its marker: this kind, its layout, and
        ``names`` (more of the folder's files a command is about to write), none of them
        a file of the user's (:meth:`check_names`)."""
        self.check_names(*names)
        self.path.mkdir(parents=True, exist_ok=True)
        marker = _read_marker(self.path) or {"tool": "keras_rnnlm", "kind": self.kind, "files": list(LAYOUTS[self.kind])}
        marker["files"] += [name for name in names if name not in marker["files"]]
        write_atomically(self.path / MARKER, json.dumps(marker, indent=1) + "\n")

    def clear(self) -> None:
        """Removes every file of keras_rnnlm's in the folder (the marker last), then the
        folders left empty. The caller has refused a folder that holds anything else
        (:meth:`check`); a file of the user's would be left in place."""
        if not self.path.is_dir():
            return
        for path in sorted(self.path.rglob("*"), key=lambda path: len(path.parts), reverse=True):
            if path.is_dir() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.rmdir()  # only if empty
            elif path.name != MARKER and _owned_file(self.path, self.kind, path):
                path.unlink()
        for path in (*(path for path in self.path.rglob(MARKER)), self.path / MARKER):
            path.unlink(missing_ok=True)
        for path in sorted(self.path.rglob("*"), key=lambda path: len(path.parts), reverse=True):
            if path.is_dir() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.rmdir()


def _read_marker(folder: Path) -> dict | None:
    """The folder's marker, or None when it has none (or one this version cannot read)."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(marker, dict) and marker.get("tool") == "keras_rnnlm" and marker.get("kind") in LAYOUTS
            and isinstance(marker.get("files"), list) and all(isinstance(name, str) for name in marker["files"])):
        return None
    return marker


def _patterns(folder: Path, kind: str) -> list[str]:
    """The names the folder's marker lists; without one, its kind's layout if it looks
    like a folder of that kind from an earlier version, else none."""
    marker = _read_marker(folder)
    if marker is not None:
        return marker["files"]
    return [*LAYOUTS[kind], *EARLIER_TEMPORARIES] if _looks_like(folder, kind) else []


def _looks_like(folder: Path, kind: str) -> bool:
    """Whether a folder holds the files that only a ``kind`` folder of keras_rnnlm's holds."""

    def holds(name: str, text: bytes) -> bool:
        path = folder / name
        try:
            return path.is_file() and text in path.read_bytes()[:1 << 16]
        except OSError:
            return False

    return any(all(holds(name, text) for name, text in alternative) for alternative in SIGNATURES[kind])


def _first_foreign(folder: Path, kind: str) -> Path | None:
    patterns, nested = _patterns(folder, kind), NESTED.get(kind, {})
    for entry in sorted(folder.rglob("*")):
        relative = entry.relative_to(folder).as_posix()
        inner = _nested_folder(folder, entry, nested)
        if inner is not None:
            if entry == inner[0]:
                found = _first_foreign(*inner)
                if found is not None:
                    return found
            continue
        if entry.is_symlink() or not (entry.is_dir() or entry.is_file()):
            return entry  # a link, a FIFO, a device: never written by keras_rnnlm
        if entry.is_dir():
            if not any(fnmatch.fnmatchcase(pattern, f"{relative}/*") or pattern.startswith(f"{relative}/")
                       for pattern in patterns) and not any(entry.iterdir()):
                return entry  # an empty folder no file of ours would go in
            continue
        if not (_ours_anywhere(entry.name) or any(fnmatch.fnmatchcase(relative, pattern) for pattern in patterns)):
            return entry
    return None


def _nested_folder(folder: Path, entry: Path, nested: dict[str, str]) -> tuple[Path, str] | None:
    """The folder inside ``folder`` that holds ``entry`` (or is it) and is a keras_rnnlm
    folder of its own (a marker, or an earlier version's layout where one may stand), and
    its kind; None if there is none."""
    relative = entry.relative_to(folder)
    for depth in range(1, len(relative.parts) + 1):
        candidate = folder.joinpath(*relative.parts[:depth])
        if not candidate.is_dir() or candidate.is_symlink():
            return None
        marker = _read_marker(candidate)
        if marker is not None:
            return candidate, marker["kind"]
        place = "/".join(relative.parts[:depth])
        for pattern, kind in nested.items():
            if fnmatch.fnmatchcase(place, pattern) and _looks_like(candidate, kind):
                return candidate, kind
    return None


def _owned_file(folder: Path, kind: str, path: Path) -> bool:
    """Whether ``path``, a file in ``folder``, is keras_rnnlm's."""
    inner = _nested_folder(folder, path, NESTED.get(kind, {}))
    if inner is not None:
        return _owned_file(*inner, path)
    relative = path.relative_to(folder).as_posix()
    return _ours_anywhere(path.name) or any(fnmatch.fnmatchcase(relative, pattern) for pattern in _patterns(folder, kind))


def _ours_anywhere(name: str) -> bool:
    """Whether a file of this name is keras_rnnlm's wherever it lies: a marker, a
    temporary file or a lock."""
    return name == MARKER or bool(PARTIAL_NAME.fullmatch(name) or LOCK_NAME.fullmatch(name))
