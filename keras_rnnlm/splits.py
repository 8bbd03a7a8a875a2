"""Which text trains and which validates: an encoded corpus cut into segments.

A segment is what a window never reaches across: a document's training part, its
held-out part, or in line mode one line. Validation is held out by position (the end of
every document) in a running text, and as seeded random lines in line mode, or comes
from separate files. ``python -m keras_rnnlm.prepare`` makes the same choice on disk
with :func:`held_out_count` and :func:`held_out_lines`, so a prepared corpus validates
on the same text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from keras_rnnlm.corpus import Document, find_documents
from keras_rnnlm.tokenizer import Tokenizer
from keras_rnnlm.vocab import (
    LINE_BREAK_ID,
    Vocabulary,
    build_vocabulary,
    encode_documents,
)


def split_by_position(
    documents: Sequence[np.ndarray], valid_fraction: float
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Holds out the last ``valid_fraction`` of every document for validation.

    Held-out text is split off by position, never as random windows: random windows
    overlap training windows and would leak the text the model is judged on.

    Returns:
        The training part and the validation part of each document.
    """
    train, valid = [], []
    for ids in documents:
        held_out = held_out_count(len(ids), valid_fraction)
        train.append(ids[: len(ids) - held_out])
        valid.append(ids[len(ids) - held_out :])
    return train, valid


def split_lines(documents: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Cuts documents into lines for line mode: each line keeps its line break (the
    end token, the target after its last token); blank lines are dropped."""
    lines = []
    for ids in documents:
        ends = np.flatnonzero(ids == LINE_BREAK_ID) + 1
        starts = np.concatenate([[0], ends[:-1]])
        lines += [ids[start:end] for start, end in zip(starts, ends, strict=True) if end - start > 1]
    return lines


def split_random_lines(
    lines: Sequence[np.ndarray], valid_fraction: float, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Holds out a seeded random ``valid_fraction`` of the lines for validation.

    In line mode every line is its own sequence, so held-out lines share no window with
    training lines and a random choice cannot leak; it also spreads validation over the
    whole list instead of its (often alphabetical) end.
    """
    held_out = held_out_lines(len(lines), valid_fraction, seed)
    train = [line for line, held in zip(lines, held_out, strict=True) if not held]
    valid = [line for line, held in zip(lines, held_out, strict=True) if held]
    return train, valid


def held_out_lines(num_lines: int, valid_fraction: float, seed: int) -> np.ndarray:
    """bool (num_lines,): which of ``num_lines`` lines a seeded random ``valid_fraction``
    holds out (the same choice whether the lines are in memory or prepared)."""
    held_out = np.zeros(num_lines, dtype=bool)
    held_out[np.random.default_rng(seed).permutation(num_lines)[: held_out_count(num_lines, valid_fraction)]] = True
    return held_out


def held_out_count(length: int, valid_fraction: float) -> int:
    """How many of ``length`` tokens (or lines) validation holds out."""
    return round(length * valid_fraction)


def segments_for_training(
    documents: Sequence[np.ndarray],
    valid_documents: Sequence[np.ndarray] | None,
    sequences: str,
    valid_fraction: float,
    seed: int,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The training and validation segments of an encoded corpus.

    Args:
        documents: The corpus, one id array per document.
        valid_documents: Separate validation documents, or None to hold out part of ``documents``.
        sequences: "stream" (a segment per document; validation is the end of each) or
            "lines" (a segment per line; validation is random lines).
        valid_fraction: Share held out when there are no separate validation documents.
        seed: Seed of the random line split.
    """
    if sequences == "lines":
        lines = split_lines(documents)
        if valid_documents is not None:
            return lines, split_lines(valid_documents)
        return split_random_lines(lines, valid_fraction, seed)
    if valid_documents is not None:
        return list(documents), list(valid_documents)
    return split_by_position(documents, valid_fraction)


def segments_for_evaluation(documents: Sequence[np.ndarray], sequences: str) -> list[np.ndarray]:
    """The segments a text is scored as: whole documents, or lines in line mode."""
    return split_lines(documents) if sequences == "lines" else list(documents)


def corpus_segments(
    config, documents: Sequence[Document], vocabulary: Vocabulary | None = None
) -> tuple[list[np.ndarray], list[np.ndarray], Vocabulary]:
    """Reads and encodes a corpus as training from text does: the training and
    validation segments (:func:`segments_for_training`) and the vocabulary.

    Args:
        config: A :class:`keras_rnnlm.config.Config`: the tokenizer, vocabulary and split
            settings, and ``corpus.valid_paths``.
        documents: The corpus (:func:`keras_rnnlm.corpus.corpus_documents`).
        vocabulary: The vocabulary to encode with (a resumed run's); None builds it from
            the documents.
    """
    tokenizer = Tokenizer.from_config(config.corpus)
    if vocabulary is None:
        vocabulary, encoded = build_vocabulary(documents, tokenizer, config.vocab.max_size, config.vocab.min_count)
    else:
        encoded = encode_documents(documents, tokenizer, vocabulary)
    valid_encoded = None
    if config.corpus.valid_paths:
        valid_encoded = encode_documents(find_documents(config.corpus.valid_paths), tokenizer, vocabulary)
    train, valid = segments_for_training(
        encoded, valid_encoded, config.corpus.sequences, config.corpus.valid_fraction, config.train.seed
    )
    return train, valid, vocabulary
