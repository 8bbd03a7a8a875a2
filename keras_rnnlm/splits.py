"""Which text trains and which validates: an encoded corpus cut into segments.

A segment is what a window never reaches across: a document's training part, its
held-out part, or in line mode one line. Validation is held out by position (the end of
every document) in a running text, and as seeded random lines in line mode, or comes
from separate files. :func:`segment_plan` makes that choice, once, from the documents'
sizes and (in line mode) where their lines end; both ways of reading a corpus follow it:
in memory (:func:`corpus_segments`) and on disk, as ``python -m keras_rnnlm.prepare``
writes it, so a prepared corpus trains and validates on the same text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from keras_rnnlm.corpus import Document, find_documents
from keras_rnnlm.encoding import ProvisionalIds, encode
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.tokenizer import RESERVED_TOKENS, Tokenizer
from keras_rnnlm.vocab import LINE_BREAK_ID, Vocabulary, build_vocabulary, encode_documents

# A segment's label in a plan: it trains, it validates, or (a blank line in line mode) neither.
DROPPED, TRAIN, VALID = 0, 1, 2


@dataclass(frozen=True)
class Segments:
    """Segments of token ids (documents, their parts, or lines) laid end to end.

    Attributes:
        tokens: Every segment's ids, one after another: a 1-D integer NumPy array, or
            :class:`keras_rnnlm.shards.ShardedTokens` (shards on disk); anything
            that an int64 array of positions indexes.
        ends: int64 (segments,): where each segment ends in ``tokens``; an empty segment
            ends where the one before it does.
    """

    tokens: object
    ends: np.ndarray

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray]) -> Segments:
        """Segments from one int32 id array each, copied end to end."""
        tokens = np.concatenate([np.asarray(ids, np.int32) for ids in arrays] or [np.zeros(0, np.int32)])
        return cls(tokens, np.cumsum([len(ids) for ids in arrays], dtype=np.int64))

    @classmethod
    def from_plan(cls, stream: np.ndarray, ends: np.ndarray, labels: np.ndarray, label: int) -> Segments:
        """The segments of ``stream`` that a plan (:func:`segment_plan`) labels ``label``, copied end to end."""
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        chosen = labels == label
        tokens = np.asarray(stream[np.repeat(chosen, ends - starts)], np.int32)
        return cls(tokens, np.cumsum(ends[chosen] - starts[chosen], dtype=np.int64))

    @property
    def num_tokens(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def first_tokens(self, count: int) -> np.ndarray:
        """The first ``count`` ids of the first segment that has any (int32)."""
        starts = np.concatenate([[0], self.ends[:-1]])
        nonempty = np.flatnonzero(self.ends > starts)
        if not len(nonempty):
            return np.zeros(0, np.int32)
        start = int(starts[nonempty[0]])
        return np.asarray(self.tokens[np.arange(start, min(start + count, int(self.ends[nonempty[0]])))], np.int32)


def segment_plan(
    document_tokens: Sequence[int],
    num_corpus_documents: int,
    sequences: str,
    valid_fraction: float,
    seed: int,
    line_ends: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Where the segments of an encoded corpus lie and which train and which validate.

    The corpus is its documents' ids end to end, the separate validation documents (if
    any) after the corpus' own. Every document ends with a line break.

    Args:
        document_tokens: Tokens of each document, in that order.
        num_corpus_documents: How many of them are the corpus; the rest are separate
            validation documents.
        sequences: "stream": a segment per document part; without separate validation
            documents, the last ``valid_fraction`` of every document validates (an empty
            part is a segment too). "lines": a segment per line, blank lines dropped;
            without separate validation documents, a seeded random ``valid_fraction`` of
            the corpus' lines validates.
        valid_fraction: The share held out when there are no separate validation documents.
        seed: Seeds the choice of held-out lines.
        line_ends: Line mode: int64, the position after every line break of the whole
            stream, in order.

    Returns:
        int64 (segments,): where each segment ends in the stream (it starts where the one
        before ends); int8 (segments,): each one's label, :data:`TRAIN`, :data:`VALID` or
        :data:`DROPPED`.
    """
    bounds = np.concatenate([[0], np.cumsum(document_tokens, dtype=np.int64)])
    separate_valid = len(document_tokens) > num_corpus_documents
    ends, labels = [], []
    if sequences == "lines":
        corpus_end = int(bounds[num_corpus_documents])
        line_ends = np.asarray(line_ends, np.int64)
        lengths = np.diff(np.concatenate([[0], line_ends]))
        kept = lengths > 1  # a blank line is its line break alone
        in_corpus = line_ends <= corpus_end
        labels = np.full(len(line_ends), DROPPED, np.int8)
        labels[kept & ~in_corpus] = VALID
        if separate_valid:
            labels[kept & in_corpus] = TRAIN
        else:
            held_out = held_out_lines(int(np.count_nonzero(kept & in_corpus)), valid_fraction, seed)
            labels[kept & in_corpus] = np.where(held_out, VALID, TRAIN)
        return line_ends, labels
    for number, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        if number >= num_corpus_documents:
            ends.append(end), labels.append(VALID)
        elif separate_valid:
            ends.append(end), labels.append(TRAIN)
        else:
            held = held_out_count(int(end - start), valid_fraction)
            ends += [end - held, end]
            labels += [TRAIN, VALID]
    return np.asarray(ends, np.int64), np.asarray(labels, np.int8)


def check_text_sizes(config, train_tokens: int, valid_tokens: int) -> None:
    """Refuses a training text too short for one example (a window and its target, or
    every lane's first step), or an empty validation text.

    Args:
        config: A :class:`keras_rnnlm.config.DataConfig`.
        train_tokens, valid_tokens: The tokens of each.

    Raises:
        RnnlmError: Saying which text is too short and what to change.
    """
    if config.mode == "bptt" and train_tokens < config.batch_size * config.bptt_steps:
        raise RnnlmError(
            f"the corpus has only {train_tokens:,} training tokens, fewer than data.batch_size x data.bptt_steps = "
            f"{config.batch_size} x {config.bptt_steps}; give more text, fewer lanes (data.batch_size) or shorter steps "
            "(data.bptt_steps)"
        )
    if config.mode == "windows" and train_tokens < config.window_size + 1:
        raise RnnlmError(
            f"the corpus has only {train_tokens} training tokens, fewer than window_size + 1 = {config.window_size + 1}; "
            "give more text or a smaller data.window_size"
        )
    if valid_tokens == 0:
        raise RnnlmError("the validation split is empty; give more text, a larger corpus.valid_fraction, or --valid FILE")


def text_sizes(config, documents: Sequence[Document], valid_documents: Sequence[Document] | None = None) -> tuple[int, int]:
    """The training and validation tokens :func:`corpus_segments` would give, counted
    without building a vocabulary (a count does not depend on which tokens become <unk>).
    ``valid_documents``: those of ``corpus.valid_paths``, if the caller has found them."""
    tokenizer = Tokenizer.from_config(config.corpus)
    if valid_documents is None:
        valid_documents = find_documents(config.corpus.valid_paths)
    every = [*documents, *valid_documents]
    ids = ProvisionalIds({token: number for number, token in enumerate(RESERVED_TOKENS)})  # the line break keeps its id
    encoded = encode(every, tokenizer, ids.__getitem__)
    stream = np.concatenate(encoded or [np.zeros(0, np.int32)])
    ends, labels = segment_plan([len(part) for part in encoded], len(documents), config.corpus.sequences,
                                config.corpus.valid_fraction, config.train.seed,
                                line_ends(stream) if config.corpus.sequences == "lines" else None)
    lengths = np.diff(np.concatenate([[0], ends]))
    return int(lengths[labels == TRAIN].sum()), int(lengths[labels == VALID].sum())


def held_out_lines(num_lines: int, valid_fraction: float, seed: int) -> np.ndarray:
    """bool (num_lines,): which of ``num_lines`` lines a seeded random ``valid_fraction``
    holds out. In line mode every line is its own sequence, so held-out lines share no
    window with training lines and a random choice cannot leak; it also spreads
    validation over the whole list instead of its (often alphabetical) end."""
    held_out = np.zeros(num_lines, dtype=bool)
    held_out[np.random.default_rng(seed).permutation(num_lines)[: held_out_count(num_lines, valid_fraction)]] = True
    return held_out


def held_out_count(length: int, valid_fraction: float) -> int:
    """How many of ``length`` tokens (or lines) validation holds out: by position, never
    as random windows, which would overlap training windows and leak the text the model
    is judged on."""
    return round(length * valid_fraction)


def line_ends(stream: np.ndarray) -> np.ndarray:
    """int64: the position after every line break of ``stream``."""
    return (np.flatnonzero(stream == LINE_BREAK_ID) + 1).astype(np.int64)


def corpus_segments(
    config, documents: Sequence[Document], vocabulary: Vocabulary | None = None, extend: Vocabulary | None = None
) -> tuple[Segments, Segments, Vocabulary]:
    """Reads and encodes a corpus and splits it as :func:`segment_plan` says.

    Args:
        config: A :class:`keras_rnnlm.config.Config`: the tokenizer, vocabulary and split
            settings, and ``corpus.valid_paths``.
        documents: The corpus (:func:`keras_rnnlm.corpus.corpus_documents`).
        vocabulary: The vocabulary to encode with (a resumed run's); None builds it from
            the documents.
        extend: With ``vocabulary`` None, a trained model's vocabulary to build on (a
            fine-tune): its ids kept, the documents' other words after them.

    Returns:
        The training and the validation segments, and the vocabulary.
    """
    tokenizer = Tokenizer.from_config(config.corpus)
    if vocabulary is None:
        vocabulary, encoded = build_vocabulary(documents, tokenizer, config.vocab.max_size, config.vocab.min_count, extend)
    else:
        encoded = encode_documents(documents, tokenizer, vocabulary)
    valid_encoded = encode_documents(find_documents(config.corpus.valid_paths), tokenizer, vocabulary)
    every = [*encoded, *valid_encoded]
    sizes = [len(ids) for ids in every]
    stream = np.concatenate(every or [np.zeros(0, np.int32)])
    del encoded, valid_encoded, every  # the stream holds them
    ends, labels = segment_plan(sizes, len(documents), config.corpus.sequences, config.corpus.valid_fraction,
                                config.train.seed, line_ends(stream) if config.corpus.sequences == "lines" else None)
    return Segments.from_plan(stream, ends, labels, TRAIN), Segments.from_plan(stream, ends, labels, VALID), vocabulary


def segments_for_evaluation(documents: Sequence[np.ndarray], sequences: str) -> Segments:
    """The segments a text is scored as: whole documents, or lines in line mode (a plan
    that holds nothing out)."""
    stream = np.concatenate(list(documents) or [np.zeros(0, np.int32)])
    ends, labels = segment_plan([len(ids) for ids in documents], len(documents), sequences, 0.0, 0,
                                line_ends(stream) if sequences == "lines" else None)
    return Segments.from_plan(stream, ends, labels, TRAIN)
