"""The vocabulary: which tokens get an id, and documents encoded as int32 id arrays.

Ids 0, 1 and 2 are always ``<pad>``, ``<unk>`` and the line break; the rest are the
corpus' most frequent tokens, most frequent first (ties in order of first appearance),
so the same corpus and settings always give the same ids. The vocabulary is saved as
plain text, one token per line, in id order.

Example:
    >>> vocabulary, encoded = build_vocabulary(documents, Tokenizer(), max_size=10_000)
    >>> vocabulary.tokens_from_ids(encoded[0][:5])
    ['blessed', 'is', 'the', 'man', 'that']
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_rnnlm.corpus import Document
from keras_rnnlm.encoding import ProvisionalIds, encode
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.files import not_a_file, write_atomically
from keras_rnnlm.tokenizer import LINE_BREAK, PAD, RESERVED_TOKENS, UNK, Tokenizer

PAD_ID, UNK_ID, LINE_BREAK_ID = (RESERVED_TOKENS.index(token) for token in (PAD, UNK, LINE_BREAK))

logger = logging.getLogger("keras_rnnlm")


class Vocabulary:
    """A fixed list of tokens; a token's id is its position in the list.

    Args:
        tokens: Every token in id order, starting with ``<pad>``, ``<unk>``, ``<eol>``.
    """

    def __init__(self, tokens: Sequence[str]):
        if tuple(tokens[: len(RESERVED_TOKENS)]) != RESERVED_TOKENS:
            raise RnnlmError(f"a vocabulary must start with {', '.join(RESERVED_TOKENS)}")
        if len(set(tokens)) != len(tokens):
            raise RnnlmError("a vocabulary cannot list the same token twice")
        self.tokens = list(tokens)
        self._ids = _IdsOrUnknown({token: number for number, token in enumerate(self.tokens)})

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def id_from_token(self, token: str) -> int:
        """The token's id, or the id of ``<unk>`` for a token outside the vocabulary."""
        return self._ids[token]

    def ids_from_tokens(self, tokens: Sequence[str]) -> np.ndarray:
        """Encodes tokens as an int32 array; unknown tokens become ``<unk>``."""
        return np.fromiter((self._ids.get(token, UNK_ID) for token in tokens), dtype=np.int32, count=len(tokens))

    def tokens_from_ids(self, ids) -> list[str]:
        """Decodes ids (any integer sequence or array) back to tokens."""
        return [self.tokens[int(number)] for number in ids]

    def save(self, path: str | Path) -> None:
        """Writes one token per line, in id order, atomically (temporary file, then rename)."""
        for token in self.tokens:
            if "\n" in token:
                raise RnnlmError(f"token {token!r} holds a newline and cannot be saved")
        write_atomically(Path(path), "".join(token + "\n" for token in self.tokens))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Reads a vocabulary written by :meth:`save`.

        Raises:
            RnnlmError: The file is missing, or is not such a vocabulary (edited, cut off).
        """
        path = Path(path)
        if not path.is_file():
            raise RnnlmError(f"vocabulary file {path} {not_a_file(path)}; is this a keras_rnnlm run folder?")
        try:
            # Bytes, not text mode, which would read a "\r" token (character level) as a line end.
            return cls(path.read_bytes().decode("utf-8").split("\n")[:-1])
        except OSError as error:
            raise RnnlmError(f"cannot read {path} ({error.strerror}); check that it is a file you may read") from None
        except (RnnlmError, UnicodeDecodeError) as error:
            raise RnnlmError(f"{path} is damaged ({error}); train the run again with --overwrite, or restore the file") from None


def build_vocabulary(
    documents: Sequence[Document], tokenizer: Tokenizer, max_size: int, min_count: int = 1, base: Vocabulary | None = None
) -> tuple[Vocabulary, list[np.ndarray]]:
    """Reads the documents once, builds the vocabulary and encodes every document.

    Tokens are read a block of lines at a time into provisional int32 ids, so memory
    holds one integer per token plus one dictionary entry per distinct token, never the
    corpus as Python strings; the provisional ids are then mapped to final ids in place.

    Args:
        documents: The corpus.
        tokenizer: How lines become tokens.
        max_size: Most tokens in the vocabulary, the three reserved tokens included.
        min_count: Tokens seen fewer times become ``<unk>``. Defaults to 1.
        base: A trained model's vocabulary to extend (:func:`vocabulary_from_counts`).

    Returns:
        The vocabulary and one int32 id array per document.
    """
    provisional = ProvisionalIds({token: number for number, token in enumerate(RESERVED_TOKENS)})
    encoded = encode(documents, tokenizer, provisional.__getitem__)
    counts = np.zeros(len(provisional), dtype=np.int64)
    for ids in encoded:  # document by document: no second copy of the corpus
        counts += np.bincount(ids, minlength=len(provisional))
    vocabulary, final_ids = vocabulary_from_counts(list(provisional), counts, max_size, min_count, base)
    for ids in encoded:
        _map_in_place(ids, final_ids)
    return vocabulary, encoded


def vocabulary_from_counts(
    types: Sequence[str], counts: np.ndarray, max_size: int, min_count: int = 1, base: Vocabulary | None = None
) -> tuple[Vocabulary, np.ndarray]:
    """The vocabulary of a corpus read into provisional ids, and the final id of each.

    Args:
        types: Every distinct token in order of first appearance, its provisional id its
            place here; the reserved tokens first.
        counts: int64 (len(types),): each type's count in the corpus.
        max_size: Most tokens in the vocabulary, the three reserved tokens included.
        min_count: Tokens seen fewer times become ``<unk>``.
        base: A trained model's vocabulary to extend (a fine-tune): its tokens keep their
            ids, whatever their counts here, and the corpus' other tokens follow, up to
            ``max_size`` in all.

    Returns:
        The vocabulary and int32 (len(types),): the final id of each provisional id
        (``<unk>`` for a type left out). Also logs the vocabulary's size and coverage.
    """
    known = [base.id_from_token(token) if base else UNK_ID for token in types]
    known[: len(RESERVED_TOKENS)] = range(len(RESERVED_TOKENS))
    known = np.asarray(known, dtype=np.int32)
    first = len(base) if base else len(RESERVED_TOKENS)
    # Most frequent first; a stable sort keeps first-appearance order among ties.
    candidates = np.arange(len(RESERVED_TOKENS), len(types))
    candidates = candidates[(counts[candidates] >= min_count) & (known[candidates] == UNK_ID)]
    room = max(max_size - first, 0)
    left_out = max(len(candidates) - room, 0)
    candidates = candidates[np.argsort(-counts[candidates], kind="stable")][:room]
    vocabulary = Vocabulary([*(base.tokens if base else RESERVED_TOKENS), *(types[number] for number in candidates)])

    final_ids = known.copy()
    final_ids[candidates] = np.arange(first, len(vocabulary))
    if base:
        unknown_before = int(counts[known == UNK_ID].sum()) - int(counts[UNK_ID])
        logger.info("vocabulary: %s tokens added to the %s of the model started from; <unk> %.2f%% of the corpus "
                    "with its vocabulary, %.2f%% now", f"{len(vocabulary) - first:,}", f"{first:,}",
                    100.0 * unknown_before / max(int(counts.sum()), 1),
                    100.0 * int(counts[final_ids == UNK_ID].sum() - counts[UNK_ID]) / max(int(counts.sum()), 1))
        if left_out:
            logger.info("vocabulary: %s more of your text's tokens (seen vocab.min_count times) were left out as <unk>: "
                        "the vocabulary may hold vocab.max_size = %s tokens; --set vocab.max_size=%s adds them all",
                        f"{left_out:,}", f"{max_size:,}", len(vocabulary) + left_out)

    if base:
        return vocabulary, final_ids
    total = int(counts.sum())
    unknown = int(counts[final_ids == UNK_ID].sum())
    logger.info(
        "vocabulary: %s tokens (of %s distinct in the corpus, min_count %d, max_size %s); "
        "covers %.2f%% of %s corpus tokens",
        f"{len(vocabulary):,}",
        f"{np.count_nonzero(counts):,}",
        min_count,
        f"{max_size:,}",
        100.0 * (total - unknown) / max(total, 1),
        f"{total:,}",
    )
    return vocabulary, final_ids


def encode_documents(documents: Sequence[Document], tokenizer: Tokenizer, vocabulary: Vocabulary) -> list[np.ndarray]:
    """Encodes documents with a fixed vocabulary (evaluation, resuming, validation files)."""
    return encode(documents, tokenizer, vocabulary._ids.__getitem__)


class _IdsOrUnknown(dict):
    """Token -> id, where a token outside the vocabulary reads as ``<unk>``. Its lookup
    is dict's own, in C: most tokens never reach this Python method."""

    def __missing__(self, token: str) -> int:
        return UNK_ID


def _map_in_place(ids: np.ndarray, table: np.ndarray, chunk: int = 1 << 20) -> None:
    """``ids[:] = table[ids]`` a chunk at a time, so the corpus is never held twice."""
    for start in range(0, len(ids), chunk):
        ids[start : start + chunk] = table[ids[start : start + chunk]]
