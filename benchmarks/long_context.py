"""Long context on the built-in corpus: the 5-token windows default against truncated BPTT.

Trains ``python -m keras_rnnlm.train`` with the default config and with
``configs/psalms_bptt.toml`` (each into ``--output-dir``; a finished run is reused), then
scores both models on the same held-out text, the default run's validation split (the
last 10% of each book), each the way ``python -m keras_rnnlm.evaluate`` scores its mode:
the windows model predicts every token from the 5 before it, the bptt model reads the
text in order with its state carried (10 lanes). Every held-out token is scored once by
each.

Usage:
    python benchmarks/long_context.py [--output-dir /tmp/keras_rnnlm_long_context] [--corpus FILE] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"windows": None, "bptt": ROOT / "configs" / "psalms_bptt.toml"}


def trained(name: str, config: Path | None, args: argparse.Namespace) -> tuple[Path, float]:
    """The run folder of one config, trained if it is not yet (seconds spent training)."""
    command = [sys.executable, "-m", "keras_rnnlm.train", "--output-dir", args.output_dir, "--run-name", name,
               "--set", "train.sample_length=0"]
    command += ["--config", str(config)] if config else []
    command += [item for setting in args.set for item in ("--set", setting)]
    command += ["--corpus", args.corpus] if args.corpus else []
    started = time.time()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"training {name} failed:\n{result.stderr[-3000:]}")
    return Path(args.output_dir) / name, time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="/tmp/keras_rnnlm_long_context")
    parser.add_argument("--corpus", help="a text file (default: the built-in corpus)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides for both runs")
    args = parser.parse_args()
    runs = {mode: trained(f"long_context_{mode}", config, args) for mode, config in CONFIGS.items()}

    from keras_rnnlm.corpus import corpus_documents
    from keras_rnnlm.evaluate import score
    from keras_rnnlm.runs import RunFolder
    from keras_rnnlm.splits import corpus_segments

    results = {}
    for mode, (run_dir, seconds) in runs.items():
        config, vocabulary, tokenizer, model = RunFolder(run_dir).load()
        _, held_out, _ = corpus_segments(config, corpus_documents(config.corpus.paths, config.corpus.builtin), vocabulary)
        scores = score(model, config, held_out)
        results[mode] = {"perplexity": scores["perplexity"], "tokens": scores["tokens"], "scoring": scores["scoring"],
                         "training_seconds": round(seconds, 1)}
        print(f"{mode:>8}: held-out perplexity {scores['perplexity']:.2f} over {scores['tokens']:,} tokens "
              f"({scores['scoring']}); trained in {seconds:.0f} s", flush=True)
    ratio = results["bptt"]["perplexity"] / results["windows"]["perplexity"]
    print(f"bptt / windows: {ratio:.3f} ({100 * (ratio - 1):+.1f}%)")
    print(json.dumps({"results": results, "bptt_over_windows": ratio}))


if __name__ == "__main__":
    main()
