"""Encoding documents into token ids, a block of lines at a time, in one worker process
per core for a large corpus.

Tokenizing is pure Python, so a large corpus is tokenized in one process per core.
Workers are spawned, not forked (TensorFlow is already running threads in this process),
and starting them costs a fraction of a second, so corpora under :data:`PARALLEL_BYTES`
stay in this process (``benchmarks/encode_speed.py`` times both ways; results in
benchmarks/RESULTS.md). Each block is encoded with ids of its own in a worker; the
parent maps only the block's distinct tokens to the caller's ids, so the ids are the same
whichever process encoded a block, and a worker that dies costs a fallback to this
process, not a wrong result.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
import sys
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from types import ModuleType

import numpy as np

from keras_rnnlm.corpus import Document
from keras_rnnlm.tokenizer import LINE_BREAK, Tokenizer

logger = logging.getLogger("keras_rnnlm")

# Corpora of this many bytes or more are encoded in worker processes: below it, starting
# the workers costs more than they gain on 2 cores (benchmarks/encode_speed.py).
PARALLEL_BYTES = 8 << 20


class ProvisionalIds(dict):
    """Token -> id, where a token not seen before gets the next id."""

    def __missing__(self, token: str) -> int:
        self[token] = number = len(self)
        return number


def encode(documents: Sequence[Document], tokenizer: Tokenizer, id_of: Callable[[str], int]) -> list[np.ndarray]:
    """Encodes every document as int32 ids, ``id_of(token)`` giving each token's id; in
    worker processes for a large corpus.

    ``id_of`` is called on each block's distinct tokens in order of first appearance, so
    an ``id_of`` that hands out new ids (:class:`ProvisionalIds`) numbers tokens in corpus
    order. If a worker dies (killed, out of memory), the corpus is encoded again in this
    process: the ids ``id_of`` gave so far follow the corpus order, so the result is the same.
    """
    with encoding_pool(documents) as pool:
        try:
            return _encode_all(documents, tokenizer, id_of, pool)
        except BrokenProcessPool as error:
            logger.warning("an encoding worker process died (%s); encoding in this process instead", error)
    return _encode_all(documents, tokenizer, id_of, None)


def _encode_all(documents: Sequence[Document], tokenizer: Tokenizer, id_of, pool: Executor | None) -> list[np.ndarray]:
    """Every document (:func:`encode_blocks`), each in one array."""
    ids = [array("i") for _ in documents]
    for number, block_ids, _ in encode_blocks(documents, tokenizer, id_of, pool):
        ids[number].frombytes(block_ids.tobytes())
    return [np.frombuffer(part, dtype=np.int32) if part else np.zeros(0, dtype=np.int32) for part in ids]


def encode_blocks(
    documents: Sequence[Document],
    tokenizer: Tokenizer,
    id_of: Callable[[str], int],
    pool: Executor | None = None,
    start: tuple[int, int] = (0, 0),
) -> Iterator[tuple[int, np.ndarray, int]]:
    """Encodes documents a block of lines at a time, from document ``start[0]``, byte
    ``start[1]`` on (in the pool's processes when there is a pool, blocks of the next
    documents in flight while one is read, so that many small files keep every core busy):
    each block's document number, int32 ids and the byte offset where it ends. Here only
    each block's distinct tokens are looked up with ``id_of``, in order of first
    appearance, and its ids mapped in NumPy."""
    for number, types, block_ids, end in _encoded_blocks(documents, tokenizer, pool, start):
        table = np.fromiter(map(id_of, types), dtype=np.int32, count=len(types))  # in order: first appearance is kept
        yield number, table[block_ids], end


def _encode_block(tokenizer: Tokenizer, text: str) -> tuple[list[str], np.ndarray]:
    """The distinct tokens of a block in order of first appearance, and the block as int32
    positions in that list."""
    types = ProvisionalIds()
    tokens = tokenizer.tokens_from_text(text, line_break="\n")
    ids = np.fromiter(map(types.__getitem__, tokens), dtype=np.int32, count=len(tokens))  # map: no Python loop per token
    return [LINE_BREAK if token == "\n" else token for token in types], ids


def _encoded_blocks(documents: Sequence[Document], tokenizer: Tokenizer, pool: Executor | None, start: tuple[int, int]):
    """:func:`_encode_block` of every block from ``start`` on, in order: (document
    number, types, ids, end offset). With a pool, a few blocks are in flight at once, so
    the text read ahead stays a few MB."""
    encode_block = functools.partial(_encode_block, tokenizer)
    first, offset = start
    blocks = (
        (number, block, end)
        for number in range(first, len(documents))
        for block, end in documents[number].blocks_from(offset if number == first else 0)
    )
    if pool is None:
        for number, block, end in blocks:
            yield number, *encode_block(block), end
        return
    in_flight: deque = deque()
    most_in_flight = 2 * _cores()
    for number, block, end in blocks:
        with _main_module_hidden():  # submit starts the workers
            in_flight.append((number, pool.submit(encode_block, block), end))
        if len(in_flight) > most_in_flight:
            block_number, future, block_end = in_flight.popleft()
            yield block_number, *future.result(), block_end
    while in_flight:
        block_number, future, block_end = in_flight.popleft()
        yield block_number, *future.result(), block_end


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Hides the ``__main__`` module from multiprocessing while it starts workers.

    A spawned worker first imports its parent's main module, so that functions defined
    there can be unpickled. Ours run only this module's functions, and the CLI's main
    module imports TensorFlow, which would make every worker start as slowly as the CLI
    (``benchmarks/encode_speed.py`` imports TensorFlow as the CLI does, to time this).
    Hidden, a worker imports only this package, and a user's script needs no
    ``if __name__ == "__main__":`` guard.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = ModuleType("__main__")  # no file or module name to import
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def encoding_pool(documents: Sequence[Document]) -> contextlib.AbstractContextManager[Executor | None]:
    """A process pool for encoding large corpora on several cores, else no pool (None)."""
    size = sum(document.path.stat().st_size for document in documents if document.path is not None)
    if _cores() < 2 or size < PARALLEL_BYTES:
        return contextlib.nullcontext()
    return ProcessPoolExecutor(_cores(), mp_context=multiprocessing.get_context("spawn"))


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
