"""Encoding speed: reading + tokenizing + encoding text into ids, in MB of text per second.

Times ``build_vocabulary`` (one streaming pass: read, decode, tokenize, assign ids, count,
map to final ids) on a synthetic corpus (benchmarks/synthetic.py) and on any ``--files``
given, at word level with the default tokenizer; the median of ``--repeats`` passes.

Usage:
    python benchmarks/encode_speed.py [--tokens 20000000] [--files ../shared/data/tinyshakespeare/input.txt]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import write_corpus  # noqa: E402

from keras_rnnlm.corpus import Document  # noqa: E402
from keras_rnnlm.tokenizer import Tokenizer  # noqa: E402
from keras_rnnlm.vocab import build_vocabulary  # noqa: E402


def megabytes_per_second(path: Path, tokenizer: Tokenizer, repeats: int) -> tuple[float, int]:
    """(MB/s, tokens encoded) of build_vocabulary on one file."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        _, (ids,) = build_vocabulary([Document(path.name, path=path)], tokenizer, max_size=10_000)
        times.append(time.perf_counter() - started)
    return path.stat().st_size / 1e6 / statistics.median(times), len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=20_000_000, help="words in the synthetic corpus")
    parser.add_argument("--files", nargs="*", default=[], help="more text files to time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp/keras_rnnlm_encode")
    args = parser.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    synthetic = Path(args.workdir) / f"synthetic_{args.tokens}.txt"
    write_corpus(synthetic, args.tokens)
    speed, tokens = megabytes_per_second(synthetic, Tokenizer(), args.repeats)
    print(f"{synthetic.name}: {synthetic.stat().st_size / 1e6:,.1f} MB, {tokens:,} tokens: {speed:.1f} MB/s (target: 20)")
    for file in map(Path, args.files):
        for name, tokenizer in (("punctuation", Tokenizer()), ("whitespace", Tokenizer(split="whitespace", lowercase=False))):
            file_speed, file_tokens = megabytes_per_second(file, tokenizer, args.repeats)
            print(f"{file.name} ({name} split): {file.stat().st_size / 1e6:,.1f} MB, {file_tokens:,} tokens: {file_speed:.1f} MB/s")
    print(json.dumps({"tokens": tokens, "megabytes_per_second": round(speed, 2)}))


if __name__ == "__main__":
    main()
