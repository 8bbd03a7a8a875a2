"""Peak memory of training against corpus size: bytes per corpus token of the growth.

Writes synthetic corpora (benchmarks/synthetic.py: random Zipf-distributed words from a
fixed 10,000-word vocabulary) of two sizes, runs ``python -m keras_rnnlm.train`` for one
epoch on each in a fresh process, and reads that process's peak resident memory. The
growth between the two, divided by the difference in tokens, is what each corpus token
costs; the target is at most 16 bytes. The model is shrunk (embedding and LSTM of 16,
batch 1,024, vocabulary 1,000) so that an epoch of 20M tokens takes minutes: the model's
memory does not depend on the corpus size, so it cancels out of the growth.

Usage:
    python benchmarks/memory.py [--tokens 1000000 20000000] [--workdir /tmp/keras_rnnlm_memory]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import write_corpus  # noqa: E402

TRAIN_SETTINGS = [
    "--epochs", "1",
    "--set", "model.embedding_dim=16", "--set", "model.units=16", "--set", "data.batch_size=1024",
    "--set", "vocab.max_size=1000",
    "--set", "train.sample_length=0", "--set", "train.tensorboard=false", "--set", "train.early_stopping_patience=0",
]

# Runs the command as its only child, then prints the child's peak resident set in bytes.
MEASURE = (
    "import resource, subprocess, sys; "
    "code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); sys.exit(code)"
)


def peak_memory_of_training(corpus: Path, output_dir: Path) -> tuple[int, float]:
    """(peak resident bytes, seconds) of one training process on ``corpus``."""
    command = [sys.executable, "-m", "keras_rnnlm.train", "--corpus", str(corpus), "--run-name", corpus.stem,
               "--output-dir", str(output_dir), "--overwrite", *TRAIN_SETTINGS]
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"training failed on {corpus}:\n{result.stderr[-3000:]}")
    return int(result.stdout.strip().splitlines()[-1]), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs=2, default=[1_000_000, 20_000_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--workdir", default="/tmp/keras_rnnlm_memory")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for tokens in args.tokens:
        corpus = workdir / f"synthetic_{tokens}.txt"
        size = write_corpus(corpus, tokens)
        peak, seconds = peak_memory_of_training(corpus, workdir / "runs")
        results.append({"tokens": tokens, "bytes": size, "peak_rss": peak, "seconds": round(seconds, 1)})
        print(f"{tokens:>12,} tokens ({size / 1e6:,.1f} MB): peak RSS {peak / 2**20:,.0f} MiB, {seconds:,.0f} s", flush=True)
    small, large = results
    growth = (large["peak_rss"] - small["peak_rss"]) / (large["tokens"] - small["tokens"])
    print(f"growth: {growth:.1f} bytes per corpus token (target: at most 16)")
    print(json.dumps({"runs": results, "bytes_per_token": round(growth, 2)}))


if __name__ == "__main__":
    main()
