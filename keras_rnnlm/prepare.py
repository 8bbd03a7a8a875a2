"""Preparing a corpus once: ``python -m keras_rnnlm.prepare``.

Training from text tokenizes the whole corpus at every start and every resume and holds
its ids in memory. For a large corpus, prepare it once instead: training then reads from
the token shards only what each batch needs (``train --data DIR``), starts in seconds and
uses the same memory whatever the corpus' size (:mod:`keras_rnnlm.shards` describes the folder).

Two passes. The first reads the text a block of lines at a time, tokenizing in one worker
process per core, and writes every token's provisional id (numbered in order of first
appearance) to disk; memory holds one entry per distinct token, never the text. Its
state is saved every :data:`CHECKPOINT_BYTES` of text, so a killed prepare, run again
with the same command, goes on from there. Tokenizing is the whole cost (Python's
regular expressions), so it is done once: the second pass counts the provisional ids,
builds the vocabulary (:func:`keras_rnnlm.vocab.vocabulary_from_counts`, as training
from text does) and maps them to final ids in NumPy, splitting off the validation text
as training from text would, into fixed-size shards. The ids are exactly those training
from the text would use; a test holds them equal. Every file is written to a temporary
name and renamed; the manifest comes last, so a folder with a manifest is complete.

Example:
    python -m keras_rnnlm.prepare --corpus books/ --out prepared/books
    python -m keras_rnnlm.train --data prepared/books --run-name books
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m keras_rnnlm.prepare: no TensorFlow needed
    import sys

    from keras_rnnlm import cli

    sys.exit(cli.main("prepare"))

import contextlib
import io
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from keras_rnnlm.config import Config
from keras_rnnlm.corpus import Document, corpus_documents, find_documents
from keras_rnnlm.splits import TRAIN, VALID, segment_plan
from keras_rnnlm.encoding import ProvisionalIds, encode_blocks, encoding_pool
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.files import Owned, write_atomically, written_atomically
from keras_rnnlm.shards import (
    FORMAT, MANIFEST, VERSION, PreparedCorpus, file_crc32, is_prepared, prepared_settings, segments_name, shard_name,
    token_dtype,
)
from keras_rnnlm.tokenizer import RESERVED_TOKENS, Tokenizer
from keras_rnnlm.vocab import LINE_BREAK_ID, vocabulary_from_counts

logger = logging.getLogger("keras_rnnlm")

SHARD_TOKENS = 1 << 26  # ids per shard: 128 MB of uint16
CHECKPOINT_BYTES = 64 << 20  # text read between saves of the first pass' state
WORK = "work"  # the first pass' files, removed once the corpus is prepared


def prepare(config: Config, out: str | Path, overwrite: bool = False, shard_tokens: int = SHARD_TOKENS) -> dict:
    """Prepares the corpus ``config`` names (the built-in one when it names none) into ``out``.

    Args:
        config: Which text (``corpus.paths``, ``corpus.valid_paths``, ``corpus.builtin``)
            and the settings that decide the ids (:func:`keras_rnnlm.shards.prepared_settings`).
        out: The folder to write.
        overwrite: Replace a corpus prepared there from other text or settings.
        shard_tokens: Ids per shard.

    Returns:
        The manifest (also in ``out/manifest.json``).

    Raises:
        RnnlmError: Unreadable text, or ``out`` holds anything keras_rnnlm did not write
            (``overwrite`` or not), or (without ``overwrite``) another prepared corpus.
    """
    out = Path(out)
    owned = Owned(out, "prepared corpus")
    owned.check("choose another --out")
    documents = corpus_documents(config.corpus.paths, config.corpus.builtin)
    valid_documents = find_documents(config.corpus.valid_paths)
    job = {
        "settings": prepared_settings(config, bool(valid_documents)),
        "sources": _sources(documents),
        "valid_sources": _sources(valid_documents),
    }
    if not overwrite and is_prepared(out):
        manifest = PreparedCorpus(out).manifest
        if {key: manifest.get(key) for key in job} == job:
            logger.info("%s is already prepared from this text with these settings", out)
            return manifest
        raise RnnlmError(f"{out} holds a corpus prepared from other text or settings; pass --overwrite to replace it, or another --out")
    if overwrite:
        owned.clear()
    owned.claim()
    work = out / WORK
    work.mkdir(parents=True, exist_ok=True)
    job_file = work / "job.json"
    if job_file.is_file() and json.loads(job_file.read_text(encoding="utf-8")) != job:
        raise RnnlmError(f"{out} holds an unfinished prepare of other text or settings; pass --overwrite to start afresh, or another --out")
    write_atomically(job_file, json.dumps(job).encode())

    started = time.perf_counter()
    every = [*documents, *valid_documents]
    state = _tokenize(every, Tokenizer.from_config(config.corpus), work)
    tokenize_seconds = time.perf_counter() - started
    manifest = _write_shards(config, out, job, state, len(documents), shard_tokens)
    seconds = time.perf_counter() - started
    megabytes = sum(document.size for document in every) / 1e6
    manifest["seconds"] = round(seconds, 1)
    write_atomically(out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    shutil.rmtree(work)
    train, valid = manifest["splits"]["train"], manifest["splits"]["valid"]
    logger.info(
        "prepared %s: %s tokens from %d document(s), %.1f MB in %.1f s (%.1f MB/s; tokenizing %.1f s); training text "
        "%s tokens in %d shard(s), validation %s; vocabulary %s, ids stored as %s",
        out, f"{manifest['corpus_tokens']:,}", len(every), megabytes, seconds, megabytes / max(seconds, 1e-9),
        tokenize_seconds, f"{train['tokens']:,}", len(train["shards"]), f"{valid['tokens']:,}",
        f"{manifest['vocabulary_size']:,}", np.dtype(manifest["dtype"]).name,
    )
    return manifest


@dataclass
class _TokenizeState:
    """Where the first pass is: saved as ``work/state.json`` at every checkpoint.

    Attributes:
        document: The document being read; ``len(documents)`` when all are read.
        offset: The byte of that document to read on from.
        tokens: Provisional ids in ``work/ids.u32``.
        types_bytes: Bytes of ``work/types.txt`` (the types after the reserved ones, one a line).
        document_tokens: Tokens of each document read so far.
    """

    document: int = 0
    offset: int = 0
    tokens: int = 0
    types_bytes: int = 0
    document_tokens: list[int] = field(default_factory=list)


def _tokenize(documents: Sequence[Document], tokenizer, work: Path) -> _TokenizeState:
    """The first pass, from its last saved state: every document's provisional ids to
    ``work/ids.u32`` and its new types to ``work/types.txt``. If an encoding worker dies,
    goes on in this process from the last saved state."""
    try:
        with encoding_pool(documents) as pool:
            return _tokenize_from_saved_state(documents, tokenizer, work, pool)
    except BrokenProcessPool as error:
        logger.warning("an encoding worker process died (%s); going on in this process from the last saved point", error)
    return _tokenize_from_saved_state(documents, tokenizer, work, None)


def _tokenize_from_saved_state(documents, tokenizer, work: Path, pool) -> _TokenizeState:
    state_file = work / "state.json"
    state = _TokenizeState(**json.loads(state_file.read_text(encoding="utf-8"))) if state_file.is_file() else _TokenizeState()
    state.document_tokens += [0] * (len(documents) - len(state.document_tokens))
    ids_file, types_file = (_open_at(work / name, size) for name, size in (("ids.u32", 4 * state.tokens), ("types.txt", state.types_bytes)))
    types_file.seek(0)
    saved_types = types_file.read().decode("utf-8").split("\n")[:-1]
    types = _TypesInOrder([*RESERVED_TOKENS, *saved_types])
    written_types = len(types.order)
    if state.document or state.offset:
        logger.info("resuming the prepare at document %d of %d, byte %s", state.document + 1, len(documents), f"{state.offset:,}")
    meter = _ProgressMeter("tokenizing", sum(document.size for document in documents),
                           sum(document.size for document in documents[: state.document]) + state.offset)

    def save():
        nonlocal written_types
        ids_file.flush()
        os.fsync(ids_file.fileno())
        types_file.write("".join(token + "\n" for token in types.order[written_types:]).encode("utf-8"))
        types_file.flush()
        os.fsync(types_file.fileno())
        written_types = len(types.order)
        state.types_bytes = types_file.tell()
        write_atomically(state_file, json.dumps(asdict(state)).encode())

    with ids_file, types_file:
        since_save = 0
        blocks = encode_blocks(documents, tokenizer, types.__getitem__, pool, (state.document, state.offset))
        for number, block_ids, end in blocks:
            if number != state.document:  # the documents before it are read whole
                state.document, state.offset = number, 0
            ids_file.write(block_ids.astype("<u4").tobytes())
            state.tokens += len(block_ids)
            state.document_tokens[number] += len(block_ids)
            meter.advance(end - state.offset)
            since_save += end - state.offset
            state.offset = end
            if since_save >= CHECKPOINT_BYTES:  # not at every document's end: a folder of many small files would fsync each
                save()
                since_save = 0
        state.document, state.offset = len(documents), 0
        save()
    meter.finish()
    return state


class _TypesInOrder(ProvisionalIds):
    """Provisional ids that also keep their tokens in id order (to be saved as they come)."""

    def __init__(self, order: list[str]):
        super().__init__({token: number for number, token in enumerate(order)})
        self.order = order

    def __missing__(self, token: str) -> int:
        self.order.append(token)
        return super().__missing__(token)


def _write_shards(config: Config, out: Path, job: dict, state: _TokenizeState, num_corpus_documents: int, shard_tokens: int) -> dict:
    """The second pass: the vocabulary from the provisional ids' counts, then the final
    ids of the training and validation text into shards; returns the manifest."""
    work = out / WORK
    types = [*RESERVED_TOKENS, *(work / "types.txt").read_bytes().decode("utf-8").split("\n")[:-1]]
    provisional = _IdsFile(work / "ids.u32")
    corpus_tokens = sum(state.document_tokens[:num_corpus_documents])
    counts = np.zeros(len(types), np.int64)
    for start in range(0, corpus_tokens, 1 << 24):  # the corpus only: as training from text, not its --valid files
        counts += np.bincount(provisional[start : min(start + (1 << 24), corpus_tokens)], minlength=len(types))
    vocabulary, final_ids = vocabulary_from_counts(types, counts, config.vocab.max_size, config.vocab.min_count)
    dtype = token_dtype(len(vocabulary))
    final_ids = final_ids.astype(dtype)

    # Which split each token goes to, and where the splits' segments end: the plan
    # training from text follows too.
    lines = _line_ends(provisional, state.tokens) if config.corpus.sequences == "lines" else None
    ends, labels = segment_plan(state.document_tokens, num_corpus_documents, config.corpus.sequences,
                                config.corpus.valid_fraction, config.train.seed, lines)
    writers = {label: _ShardWriter(out, split, dtype, shard_tokens) for label, split in ((TRAIN, "train"), (VALID, "valid"))}
    meter = _ProgressMeter("writing shards", state.tokens, 0, unit="M tokens", scale=1e6)
    for chunk in range(0, state.tokens, 1 << 22):
        chunk_end = min(chunk + (1 << 22), state.tokens)
        ids = final_ids[provisional[chunk:chunk_end]]
        token_labels = labels[np.searchsorted(ends, np.arange(chunk, chunk_end), side="right")]
        for label, writer in writers.items():
            writer.add(ids[token_labels == label])
        meter.advance(chunk_end - chunk)
    meter.finish()
    lengths = np.diff(np.concatenate([[0], ends]))
    for label, writer in writers.items():
        writer.end_segments(lengths[labels == label])

    files = {}
    vocabulary.save(out / "vocabulary.txt")
    files["vocabulary.txt"] = _file_entry(out / "vocabulary.txt")
    splits = {}
    for writer in writers.values():
        split = writer.split
        splits[split] = writer.close()
        for name in [*splits[split]["shards"], segments_name(split)]:
            files[name] = _file_entry(out / name)
    return {
        "format": FORMAT,
        "version": VERSION,
        **job,
        "dtype": dtype.str,
        "shard_tokens": shard_tokens,
        "vocabulary_size": len(vocabulary),
        "corpus_tokens": corpus_tokens,
        "splits": splits,
        "files": files,
    }


def _line_ends(provisional: _IdsFile, tokens: int) -> np.ndarray:
    """int64: the position after every line break of the provisional ids (the line break
    keeps its id), read a block at a time."""
    return np.concatenate([
        np.flatnonzero(provisional[chunk : min(chunk + (1 << 24), tokens)] == LINE_BREAK_ID) + chunk + 1
        for chunk in range(0, tokens, 1 << 24)
    ] or [np.zeros(0, np.int64)]).astype(np.int64)


class _IdsFile:
    """The provisional ids on disk, read a slice at a time (a memory map would keep every
    page read mapped: the process' resident memory would grow to the file's size)."""

    def __init__(self, path: Path):
        self.path = path

    def __getitem__(self, part: slice) -> np.ndarray:
        return np.fromfile(self.path, dtype="<u4", count=part.stop - part.start, offset=4 * part.start)


class _ShardWriter:
    """Writes one split's ids into shards of ``shard_tokens`` as they come, and its
    segment ends. A shard is written under a temporary name and renamed once whole (or at
    the end), so memory holds one chunk, not one shard. A prepare killed in this pass
    writes its shards again: the pass is fast beside tokenizing.
    """

    def __init__(self, out: Path, split: str, dtype: np.dtype, shard_tokens: int):
        self.out, self.split, self.dtype, self.shard_tokens = out, split, dtype, shard_tokens
        self.shards: list[str] = []
        self.tokens = 0
        self.segment_lengths: list[np.ndarray] = []
        self._shard = contextlib.ExitStack()  # the shard being written: renamed into place when it closes
        self._file, self._in_shard = None, 0

    def add(self, ids: np.ndarray) -> None:
        ids = ids.astype(self.dtype, copy=False)
        while len(ids):
            if self._file is None:
                temporary = self._shard.enter_context(written_atomically(self.out / shard_name(self.split, len(self.shards))))
                self._file = self._shard.enter_context(open(temporary, "wb"))
            count = min(len(ids), self.shard_tokens - self._in_shard)
            self._file.write(ids[:count].tobytes())
            self._in_shard += count
            self.tokens += count
            ids = ids[count:]
            if self._in_shard == self.shard_tokens:
                self._end_shard()

    def end_segments(self, lengths) -> None:
        self.segment_lengths.append(np.asarray(lengths, np.int64))

    def close(self) -> dict:
        if self._file is not None:
            self._end_shard()
        ends = np.cumsum(np.concatenate([np.zeros(0, np.int64), *self.segment_lengths]), dtype=np.int64)
        assert not len(ends) or ends[-1] == self.tokens, "segments must cover the split's tokens"
        buffer = io.BytesIO()
        np.save(buffer, ends)
        write_atomically(self.out / segments_name(self.split), buffer.getvalue())
        return {"tokens": self.tokens, "segments": len(ends), "shards": self.shards}

    def _end_shard(self) -> None:
        self._shard.close()  # the file closed, flushed to the disk and renamed into place
        self.shards.append(shard_name(self.split, len(self.shards)))
        self._file, self._in_shard = None, 0


class _ProgressMeter:
    """Progress of a long pass on standard error, with its speed: one line redrawn on a
    terminal, a line every 10% in a log. (Keras' Progbar would import TensorFlow, which
    prepare does not need: it starts in a fraction of a second without it.)"""

    def __init__(self, what: str, total: float, done: float = 0, unit: str = "MB", scale: float = 1e6):
        self.what, self.total, self.done, self.unit, self.scale = what, total, done, unit, scale
        self.started, self.start_done = time.perf_counter(), done
        self.terminal = sys.stderr.isatty()
        self.shown_at, self.shown_tenth = 0.0, int(10 * done / total) if total else 10

    def advance(self, amount: float) -> None:
        self.done += amount
        now = time.perf_counter()
        tenth = int(10 * self.done / self.total) if self.total else 10
        if now - self.started < 2:  # a short pass needs no progress display
            return
        if (self.terminal and now - self.shown_at >= 0.5) or (not self.terminal and tenth > self.shown_tenth):
            self.shown_at, self.shown_tenth = now, tenth
            self._show(end="\r" if self.terminal else "\n")

    def finish(self) -> None:
        if self.terminal and self.shown_at:
            self._show(end="\n")

    def _show(self, end: str) -> None:
        elapsed = time.perf_counter() - self.started
        rate = (self.done - self.start_done) / self.scale / max(elapsed, 1e-9)
        left = (self.total - self.done) / self.scale / rate if rate > 0 else 0
        share = 100 * self.done / self.total if self.total else 100
        print(f"{self.what}: {share:3.0f}% {self.done / self.scale:,.1f}/{self.total / self.scale:,.1f} {self.unit}, "
              f"{rate:,.1f} {self.unit}/s, {left:,.0f} s left   ", end=end, file=sys.stderr, flush=True)


def _sources(documents: Sequence[Document]) -> list[dict]:
    """What identifies the text: each document's name, size and (for a file) time of change."""
    return [
        {"name": document.name, "size": document.size,
         **({"modified_ns": document.path.stat().st_mtime_ns} if document.path is not None else {})}
        for document in documents
    ]


def _file_entry(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "crc32": file_crc32(path)}


def _open_at(path: Path, size: int):
    """``path`` opened for reading and appending, cut to ``size`` bytes (what the last
    saved state counted; a killed run may have written more)."""
    file = open(path, "r+b" if path.exists() else "w+b")
    file.truncate(size)
    file.seek(size)
    return file


def main(args) -> int:
    """``python -m keras_rnnlm.prepare``, its arguments checked (:func:`keras_rnnlm.arguments.prepare`):
    prepares the corpus and says how to train from it."""
    prepare(args.config, args.out, overwrite=args.overwrite, shard_tokens=args.shard_tokens or SHARD_TOKENS)
    same_settings = "".join(f" {flag} {value}" for flag, value in [("--config", args.config_file), *(("--set", item) for item in args.set)]
                            if value)
    logger.info("train from it: python -m keras_rnnlm.train --data %s%s", args.out, same_settings)
    return 0
