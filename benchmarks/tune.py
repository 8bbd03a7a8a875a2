"""Tuning on the built-in corpus: does the search beat the default config, and does its
best config train again to the same figure?

Runs, as a user would, each in a fresh process:
1. ``python -m keras_rnnlm.tune --search configs/search/default.toml`` for ``--minutes``;
2. ``python -m keras_rnnlm.train`` with the default config, at the precision the search
   used (it decides "auto" once): the reference;
3. ``python -m keras_rnnlm.train --config <search>/best.toml``: the reproduction.

Targets: the best trial's validation perplexity at most 0.95 x the default config's, and
the reproduction within 1% of the best trial's.

Usage (from the project root):
    python benchmarks/tune.py [--minutes 30] [--max-trials 20] [--strategy bayesian] [--output-dir /tmp/keras_rnnlm_tune]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(arguments: list[str]) -> float:
    """Runs a keras_rnnlm command from the project root; its wall time in seconds."""
    started = time.time()
    subprocess.run([sys.executable, "-m", *arguments], cwd=ROOT, check=True)
    return time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--max-trials", type=int, default=20)
    parser.add_argument("--strategy", default="bayesian")
    parser.add_argument("--search", default="configs/search/default.toml")
    parser.add_argument("--output-dir", default="/tmp/keras_rnnlm_tune")
    args = parser.parse_args()
    out = Path(args.output_dir)
    tuning = out / "search"
    seconds = {"search": run(["keras_rnnlm.tune", "--search", args.search, "--max-trials", str(args.max_trials),
                              "--max-minutes", str(args.minutes), "--strategy", args.strategy,
                              "--output-dir", str(out), "--run-name", "search", "--overwrite"])}
    state = json.loads((tuning / "tune.json").read_text())
    best_trial = state["best"]
    best = json.loads((tuning / "trials" / best_trial / "summary.json").read_text())
    precision = json.dumps(state["precision"])
    seconds["default"] = run(["keras_rnnlm.train", "--set", f"train.precision={precision}", "--output-dir", str(out),
                              "--run-name", "default", "--overwrite"])
    seconds["again"] = run(["keras_rnnlm.train", "--config", str(tuning / "best.toml"), "--output-dir", str(out),
                            "--run-name", "best_again", "--overwrite"])
    default, again = (json.loads((out / name / "summary.json").read_text()) for name in ("default", "best_again"))
    results = {
        "trials": len(state["trials"]), "minutes": round(state["seconds"] / 60, 1), "precision": state["precision"],
        "best_trial": best_trial, "best_val_perplexity": best["val_perplexity"],
        "default_val_perplexity": default["val_perplexity"], "best_over_default": best["val_perplexity"] / default["val_perplexity"],
        "again_val_perplexity": again["val_perplexity"], "again_over_best": again["val_perplexity"] / best["val_perplexity"],
        "seconds": {name: round(value, 1) for name, value in seconds.items()},
    }
    (out / "tune_benchmark.json").write_text(json.dumps(results, indent=1))
    print(f"{results['trials']} trials in {results['minutes']} minutes ({results['precision']}): best trial {best_trial} "
          f"{best['val_perplexity']:.2f} against the default config's {default['val_perplexity']:.2f} "
          f"({results['best_over_default']:.3f}x; target <= 0.95); best.toml trained again: {again['val_perplexity']:.2f} "
          f"({results['again_over_best']:.4f}x the trial; target within 1%)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
