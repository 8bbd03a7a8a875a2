"""Quality must not pay for speed: validation perplexity of float32 against mixed precision.

Trains ``python -m keras_rnnlm.train`` on the built-in corpus (or ``--corpus``) for a
fixed budget, ``--epochs`` epochs with no early stopping, once per seed and precision,
each in a fresh process, and prints the validation perplexity of each run and the mean
difference. Every other setting is the CLI's default, so the runs train what a user's
run trains (on a CPU: the unrolled WindowLSTM, FusedAdam, NextTokenCrossEntropy). Mixed
precision is bfloat16 on a CPU, float16 on a GPU.

Usage:
    python benchmarks/quality.py [--seeds 1234 1235 1236] [--epochs 4] [--corpus FILE] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PRECISIONS = ("float32", "mixed")


def validation_perplexity(precision: str, seed: int, args: argparse.Namespace, output_dir: Path) -> float:
    """The best validation perplexity of one training run."""
    run_name = f"{precision}_{seed}"
    command = [sys.executable, "-m", "keras_rnnlm.train", "--epochs", str(args.epochs), "--output-dir", str(output_dir),
               "--run-name", run_name, "--overwrite",
               "--set", f"train.precision={precision}", "--set", f"train.seed={seed}",
               "--set", "train.early_stopping_patience=0", "--set", "train.sample_length=0"]
    command += [item for setting in args.set for item in ("--set", setting)]
    command += ["--corpus", args.corpus] if args.corpus else []
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"training failed ({precision}, seed {seed}):\n{result.stderr[-3000:]}")
    return json.loads((output_dir / run_name / "summary.json").read_text(encoding="utf-8"))["val_perplexity"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1234, 1235, 1236])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--corpus", help="a text file (default: the built-in corpus)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides")
    args = parser.parse_args()
    perplexities = {precision: [] for precision in PRECISIONS}
    with tempfile.TemporaryDirectory() as output_dir:
        for seed in args.seeds:
            for precision in PRECISIONS:
                perplexities[precision].append(validation_perplexity(precision, seed, args, Path(output_dir)))
            float32, mixed = (perplexities[precision][-1] for precision in PRECISIONS)
            print(f"seed {seed}: float32 {float32:.2f}, mixed {mixed:.2f} ({100 * (mixed / float32 - 1):+.1f}%)", flush=True)
    means = {precision: statistics.mean(values) for precision, values in perplexities.items()}
    print(f"mean: float32 {means['float32']:.2f}, mixed {means['mixed']:.2f} ({100 * (means['mixed'] / means['float32'] - 1):+.1f}%); "
          f"float32 seeds spread {100 * (max(perplexities['float32']) / min(perplexities['float32']) - 1):.1f}%")
    print(json.dumps({"val_perplexity": perplexities, "epochs": args.epochs, "seeds": args.seeds}))


if __name__ == "__main__":
    main()
