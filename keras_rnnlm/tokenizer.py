"""Text to tokens and back, at word or character level.

Word level (``split="punctuation"``) keeps words whole with their inner apostrophes
(``don't``, ``potter’s``), makes every other punctuation mark its own token
(``blood,`` -> ``blood`` ``,``) and keeps a literal ``<unk>`` (as in WikiText) as one
token. ``split="whitespace"`` trusts text that is already tokenized. Character level
makes every character a token. At both levels the end of each line is the token
:data:`LINE_BREAK`, so poems and lyrics keep their lines.

Example:
    >>> Tokenizer().tokens_from_line("Don't stop, baby")
    ["don't", 'stop', ',', 'baby']
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PAD = "<pad>"
UNK = "<unk>"
LINE_BREAK = "<eol>"
RESERVED_TOKENS = (PAD, UNK, LINE_BREAK)  # Their ids are 0, 1 and 2 in every vocabulary.

# A literal <unk>, a word (letters, digits, underscore) with apostrophes inside it, or
# any other single non-space character.
_WORD_PATTERN = re.compile(r"<unk>|\w+(?:['’]\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = frozenset(".,;:!?)]}%…")
_NO_SPACE_AFTER = frozenset("([{")


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

    def tokens_from_line(self, line: str) -> list[str]:
        """Returns the tokens of one line, without its line break."""
        if self.lowercase:
            line = line.lower()
        if self.level == "char":
            return list(line)
        if self.split == "whitespace":
            return line.split()
        return _WORD_PATTERN.findall(line)

    def tokens_from_text(self, text: str) -> list[str]:
        """Returns the tokens of a text; every line but an unterminated last one ends in a line break."""
        tokens = []
        lines = text.split("\n")
        for number, line in enumerate(lines):
            tokens.extend(self.tokens_from_line(line.rstrip("\r")))
            if number < len(lines) - 1:
                tokens.append(LINE_BREAK)
        return tokens

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
            if pieces and not pieces[-1].endswith("\n") and token not in _NO_SPACE_BEFORE:
                if pieces[-1] not in _NO_SPACE_AFTER:
                    pieces.append(" ")
            pieces.append(token)
        return "".join(pieces)
