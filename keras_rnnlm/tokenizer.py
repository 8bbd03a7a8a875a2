"""Text to tokens and back, at word or character level.

Word level (``split="punctuation"``) keeps words whole with their inner apostrophes
(``don't``, ``potter’s``), makes every other punctuation mark its own token
(``blood,`` -> ``blood`` ``,``) and keeps a literal ``<unk>`` (as in WikiText) as one
token. ``split="whitespace"`` trusts text that is already tokenized. Character level
makes every character a token. At both levels the end of each line is the token
:data:`LINE_BREAK`, so poems and lyrics keep their lines.

The same tokenizer also exists as TensorFlow string ops (:meth:`Tokenizer.graph_tokens_from_texts`
and :meth:`Tokenizer.graph_text_from_tokens`), so an exported model takes and returns
text without this package; a property test holds the two equal.

Example:
    >>> Tokenizer().tokens_from_line("Don't stop, baby")
    ["don't", 'stop', ',', 'baby']
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorflow as tf

    from keras_rnnlm.config import CorpusConfig

PAD = "<pad>"
UNK = "<unk>"
LINE_BREAK = "<eol>"
RESERVED_TOKENS = (PAD, UNK, LINE_BREAK)  # Their ids are 0, 1 and 2 in every vocabulary.

# Word tokens, and the line break as a token of its own, so one regex pass covers many
# lines (with map over a dict for the ids, faster encoding: benchmarks/encode_speed.py).
# "punctuation": a word (letters, digits, underscore) with apostrophes inside it, a
# literal <unk>, or any other single non-space character. "whitespace": what str.split
# keeps. The possessive quantifiers (++, *+) match exactly what + and * would here, as
# nothing follows a word, but spare re its backtracking bookkeeping. Words come first
# (the commonest), and <unk> before the class that would split it.
_WORDS_AND_LINE_BREAKS = {
    "punctuation": re.compile(r"\w++(?:['’]\w++)*+|<unk>|[^\w\s]|\n"),
    "whitespace": re.compile(r"[^\s]++|\n"),
}
# Carriage returns that end a line (a Windows "\r\n", or a last line without "\n").
_LINE_END_RETURNS = re.compile(r"\r+(?=\n|\Z)")
NO_SPACE_BEFORE = frozenset(".,;:!?)]}%…")
NO_SPACE_AFTER = frozenset("([{")


@dataclass(frozen=True)
class Tokenizer:
    """Cuts lines of text into tokens and joins tokens back into text.

    Args:
        level: "word" (default) or "char".
        split: Word level only: "punctuation" (default) or "whitespace".
        lowercase: Lower-case text first. Defaults to True.
    """

    level: str = "word"
    split: str = "punctuation"
    lowercase: bool = True

    @classmethod
    def from_config(cls, corpus: CorpusConfig) -> Tokenizer:
        """The tokenizer a corpus config describes (its ``level``, ``split`` and ``lowercase``)."""
        return cls(level=corpus.level, split=corpus.split, lowercase=corpus.lowercase)

    def tokens_from_line(self, line: str) -> list[str]:
        """Returns the tokens of one line, without its line break."""
        if self.lowercase:
            line = line.lower()
        if self.level == "char":
            return list(line)
        return _WORDS_AND_LINE_BREAKS[self.split].findall(line)

    def tokens_from_text(self, text: str, line_break: str = LINE_BREAK) -> list[str]:
        """Returns the tokens of a text; every line but an unterminated last one ends in a line break.

        Args:
            text: Any number of lines.
            line_break: The token that ends a line. Encoding passes "\n", the one token no
                tokenizer otherwise yields, and renames it once among the distinct tokens,
                which spares a Python loop over every token.
        """
        if self.lowercase:
            text = text.lower()
        if self.level == "char":
            tokens = list(_LINE_END_RETURNS.sub("", text))
        else:
            tokens = _WORDS_AND_LINE_BREAKS[self.split].findall(text)
        if line_break == "\n":
            return tokens
        return [line_break if token == "\n" else token for token in tokens]

    def text_from_tokens(self, tokens: list[str]) -> str:
        """Joins tokens into readable text: line breaks become newlines and, at word
        level, punctuation attaches to its word (``bad blood ,`` -> ``bad blood,``)."""
        if self.level == "char":
            return "".join("\n" if token == LINE_BREAK else token for token in tokens)
        pieces: list[str] = []
        for token in tokens:
            if token == LINE_BREAK:
                pieces.append("\n")
                continue
            if pieces and not pieces[-1].endswith("\n") and token not in NO_SPACE_BEFORE:
                if pieces[-1] not in NO_SPACE_AFTER:
                    pieces.append(" ")
            pieces.append(token)
        return "".join(pieces)

    def graph_tokens_from_texts(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """:meth:`tokens_from_text` as TensorFlow ops, for a graph that takes text.

        Args:
            texts: string (batch,), UTF-8.

        Returns:
            string (batch, None): each text's tokens, as :meth:`tokens_from_text` gives them.
        """
        import tensorflow as tf  # here, so that the encoding worker processes start without it
        if self.lowercase:
            # ICU's full case mapping, as str.lower. It stops at a NUL character, so the
            # pieces between NULs are lowered one by one. (reduce_join drops a NUL separator,
            # hence the NUL added to every piece and removed from the end.)
            pieces = tf.strings.split(texts, "\0")  # (batch, pieces)
            lowered = tf.ragged.map_flat_values(tf.strings.lower, pieces, encoding="utf-8")
            texts = tf.strings.reduce_join(lowered + "\0", axis=1)  # (batch,)
            texts = tf.strings.regex_replace(texts, "\\x{0}$", "")
        lines = tf.strings.split(texts, "\n")  # (batch, lines)
        lines = tf.strings.regex_replace(lines, "\r+$", "")
        if self.level == "char":
            tokens = tf.strings.unicode_split(lines, "UTF-8")  # (batch, lines, chars)
        else:
            # Surround every token with spaces after making every whitespace run one space;
            # as tokens never contain whitespace, splitting at spaces then yields exactly them.
            whitespace = _re2_class(_python_whitespace())
            lines = tf.strings.regex_replace(lines, whitespace + "+", " ")
            if self.split == "punctuation":
                lines = tf.strings.regex_replace(lines, _re2_word_pattern(), " \\0 ")
            tokens = tf.strings.split(lines, " ")  # (batch, lines, pieces)
            tokens = tf.ragged.boolean_mask(tokens, tf.strings.length(tokens) > 0)  # (batch, lines, tokens)
        # A line break after every line, then drop the one after the last line.
        line_breaks = tf.fill([tokens.values.nrows(), 1], LINE_BREAK)  # (lines, 1)
        tokens = tokens.with_values(tf.concat([tokens.values, line_breaks], axis=1))  # (batch, lines, tokens + 1)
        tokens = tokens.merge_dims(1, 2)  # (batch, tokens)
        return tokens[:, :-1]

    def graph_text_from_tokens(self, tokens: tf.RaggedTensor) -> tf.Tensor:
        """:meth:`text_from_tokens` as TensorFlow ops.

        Args:
            tokens: string (batch, None).

        Returns:
            string (batch,).
        """
        import tensorflow as tf
        token = tokens.flat_values  # (tokens,) of all texts, one after another
        piece = tf.where(token == LINE_BREAK, "\n", token)  # (tokens,)
        if self.level == "word":
            # A space before every token except the first of a text, a line break, the token
            # after a line break, a closing mark and the token after an opening mark.
            first = tf.ragged.range(tokens.row_lengths()).flat_values == 0  # (tokens,)
            before = tf.concat([[LINE_BREAK], token[:-1]], axis=0)  # (tokens,)
            glued = (
                first
                | (token == LINE_BREAK)
                | (before == LINE_BREAK)
                | _is_any_of(token, NO_SPACE_BEFORE)
                | _is_any_of(before, NO_SPACE_AFTER)
            )
            piece = tf.where(glued, piece, " " + piece)
        return tf.strings.reduce_join(tokens.with_flat_values(piece), axis=1)  # (batch,)


def _is_any_of(tokens: tf.Tensor, marks: frozenset[str]) -> tf.Tensor:
    import tensorflow as tf
    return tf.reduce_any(tokens[:, tf.newaxis] == tf.constant(sorted(marks))[tf.newaxis, :], axis=1)


# Python's \w and \s are Unicode-aware and RE2's are ASCII-only, so the graph tokenizer spells
# out Python's classes code point by code point (about 740 ranges, built once per process).
@functools.cache
def _python_word_characters() -> tuple[tuple[int, int], ...]:
    return _code_point_ranges(lambda character: character.isalnum() or character == "_")  # What re's \w means.


@functools.cache
def _python_whitespace() -> tuple[tuple[int, int], ...]:
    return _code_point_ranges(str.isspace)  # What re's \s means.


def _code_point_ranges(predicate) -> tuple[tuple[int, int], ...]:
    ranges, start = [], None
    for code_point in range(0x110000):
        included = not 0xD800 <= code_point <= 0xDFFF and predicate(chr(code_point))  # no surrogates in UTF-8
        if included and start is None:
            start = code_point
        elif not included and start is not None:
            ranges.append((start, code_point - 1))
            start = None
    if start is not None:
        ranges.append((start, 0x10FFFF))
    return tuple(ranges)


def _re2_class(*range_sets, negate: bool = False) -> str:
    body = "".join(
        f"\\x{{{first:X}}}" if first == last else f"\\x{{{first:X}}}-\\x{{{last:X}}}"
        for ranges in range_sets
        for first, last in ranges
    )
    return f"[{'^' if negate else ''}{body}]"


@functools.cache
def _re2_word_pattern() -> str:
    """The "punctuation" pattern of :data:`_WORDS_AND_LINE_BREAKS`, without the line
    break (the graph splits lines first), in RE2 syntax."""
    word = _re2_class(_python_word_characters())
    other = _re2_class(_python_word_characters(), _python_whitespace(), negate=True)
    return f"<unk>|{word}+(?:['’]{word}+)*|{other}"
