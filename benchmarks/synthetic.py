"""A synthetic corpus of any size: random words from a fixed vocabulary, Zipf-distributed
like real text, in lines of 5 to 20 words. The same arguments write the same file.

Usage:
    python benchmarks/synthetic.py --tokens 1000000 --out /tmp/synthetic_1M.txt
    python benchmarks/synthetic.py --tokens 2640000 --files 3000 --out /tmp/many   # a folder of small files
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np

LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


@functools.cache
def word_list(num_words: int, seed: int = 0) -> list[str]:
    """``num_words`` distinct lower-case pseudo-words of 2 to 9 letters."""
    rng = np.random.default_rng(seed)
    words: dict[str, None] = {}
    while len(words) < num_words:
        length = int(rng.integers(2, 10))
        words.setdefault("".join(LETTERS[rng.integers(0, 26, length)]), None)
    return list(words)


def write_corpus(path: str | Path, num_tokens: int, num_words: int = 10_000, seed: int = 0) -> int:
    """Writes about ``num_tokens`` words (lines end early only at the end) and returns
    the number of bytes written. Word frequencies follow Zipf's law (rank r ~ 1 / r)."""
    rng = np.random.default_rng(seed)
    words = np.array(word_list(num_words))  # the same words whatever the seed
    weights = 1.0 / np.arange(1, num_words + 1)
    written, size = 0, 0
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        while written < num_tokens:
            chunk = min(1_000_000, num_tokens - written)
            ids = rng.choice(num_words, size=chunk, p=weights / weights.sum())
            lengths = rng.integers(5, 21, size=chunk // 5 + 1)
            ends = np.cumsum(lengths)
            ends = ends[ends < chunk].tolist() + [chunk]
            lines, start = [], 0
            for end in ends:
                lines.append(" ".join(words[ids[start:end]]))
                start = end
            text = "\n".join(lines) + "\n"
            file.write(text)
            size += len(text.encode("utf-8"))
            written += chunk
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--words", type=int, default=10_000, help="distinct words (default: 10,000)")
    parser.add_argument("--files", type=int, default=1, help="more than 1: --out is a folder of this many files")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.files == 1:
        size = write_corpus(args.out, args.tokens, args.words)
    else:  # each file a different seed: the same words, other text
        Path(args.out).mkdir(parents=True, exist_ok=True)
        size = sum(write_corpus(Path(args.out) / f"{number:06d}.txt", args.tokens // args.files, args.words, seed=number)
                   for number in range(args.files))
    print(f"wrote {args.out}: {args.tokens:,} words in {args.files:,} file(s), {size:,} bytes")


if __name__ == "__main__":
    main()
