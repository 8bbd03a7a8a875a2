"""Encoding speed: reading + tokenizing + encoding text into ids, in MB of text per second.

Times ``build_vocabulary`` (one streaming pass: read, decode, tokenize, assign ids, count,
map to final ids) on a synthetic corpus (benchmarks/synthetic.py) and on any ``--files``
given, at word level; the median of ``--repeats`` passes. Each file is timed in this
process alone and with a worker process per core (``build_vocabulary`` itself picks
workers only for corpora of ``keras_rnnlm.encoding.PARALLEL_BYTES`` or more). This script
imports TensorFlow first, as ``python -m keras_rnnlm.train`` does, so worker start-up
costs what it costs under the CLI.

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

import keras_rnnlm.train  # noqa: E402, F401  # as under the CLI, this main module has TensorFlow loaded
from keras_rnnlm import encoding, vocab  # noqa: E402
from keras_rnnlm.corpus import Document  # noqa: E402
from keras_rnnlm.tokenizer import Tokenizer  # noqa: E402

WAYS = {"one process": float("inf"), "worker processes": 0}  # encoding.PARALLEL_BYTES for each


def megabytes_per_second(path: Path, tokenizer: Tokenizer, repeats: int) -> tuple[dict[str, float], int]:
    """({way: MB/s}, tokens encoded) of build_vocabulary on one file, the ways interleaved."""
    times = {way: [] for way in WAYS}
    for _ in range(repeats):
        for way, parallel_bytes in WAYS.items():
            encoding.PARALLEL_BYTES = parallel_bytes
            started = time.perf_counter()
            _, (ids,) = vocab.build_vocabulary([Document(path.name, path=path)], tokenizer, max_size=10_000)
            times[way].append(time.perf_counter() - started)
    return {way: path.stat().st_size / 1e6 / statistics.median(seconds) for way, seconds in times.items()}, len(ids)


def report(name: str, path: Path, speeds: dict[str, float], tokens: int) -> None:
    ways = ", ".join(f"{way} {speed:.1f} MB/s" for way, speed in speeds.items())
    print(f"{name}: {path.stat().st_size / 1e6:,.1f} MB, {tokens:,} tokens: {ways}", flush=True)


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
    print(f"{encoding._cores()} cores; target: 20 MB/s")
    speeds, tokens = megabytes_per_second(synthetic, Tokenizer(), args.repeats)
    report(synthetic.name, synthetic, speeds, tokens)
    for file in map(Path, args.files):
        for name, tokenizer in (("punctuation", Tokenizer()), ("whitespace", Tokenizer(split="whitespace", lowercase=False))):
            report(f"{file.name} ({name} split)", file, *megabytes_per_second(file, tokenizer, args.repeats))
    print(json.dumps({"tokens": tokens, "megabytes_per_second": {way: round(speed, 2) for way, speed in speeds.items()}}))


if __name__ == "__main__":
    main()
