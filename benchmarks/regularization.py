"""The regularization of issue 27 (AWD-LSTM's parts and weight averaging), each on and
off, at equal wall time; and the architecture options of issue 28 (layer normalization,
attention) the same way.

Trains one bptt config once per variant, each for the same minutes
(``train.max_minutes``: it stops after the first epoch that ends past the budget), the
config otherwise the same, each in its own process, one after the other; then reports
the best validation perplexity (the run's own held-out text, read in order with the state
carried), the same with the continuous cache the run fitted, the epochs trained, and,
with ``--test``, the test text's perplexity with and without the cache
(``python -m keras_rnnlm.evaluate``).

Usage (from the project root):
    python benchmarks/regularization.py [--config configs/psalms_bptt.toml] [--minutes 6]
        [--variants none,locked,weight,word,ar_tar,averaging,all,layer_norm] [--corpus FILE --valid FILE --test FILE]
        [--output-dir /tmp/keras_rnnlm_regularization] [--set key=value ...]
    python benchmarks/regularization.py --config configs/wikitext2_awd.toml \
        --variants none,without_weight,without_ar_tar,without_all,attention,layer_norm ...   # the parts on, each taken away

Rerunning the same command skips the variants already trained (their run folders are kept).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Each variant's overrides; AWD-LSTM's values (Merity et al. 2017) where it has them.
VARIANTS = {
    "none": [],
    "locked": ["model.locked_dropout=true"],
    "weight": ["model.weight_dropout=0.5"],
    "word": ["model.word_dropout=0.1"],
    "ar_tar": ["model.activation_regularization=2.0", "model.temporal_activation_regularization=1.0"],
    # AWD-LSTM averages the weights once validation stalls (NT-ASGD); here a moving
    # average of about the last 100 steps, all along.
    "averaging": ["train.weight_averaging=0.99"],
}
PARTS = [name for name in VARIANTS if name != "none"]
VARIANTS["all"] = [override for name in PARTS for override in VARIANTS[name]]
# For a config that has the parts on (configs/wikitext2_awd.toml): each taken away, as
# AWD-LSTM's ablation does, and all of them.
OFF = {"model.locked_dropout": "false", "model.weight_dropout": "0", "model.word_dropout": "0",
       "model.activation_regularization": "0", "model.temporal_activation_regularization": "0",
       "train.weight_averaging": "0"}
for name in PARTS:
    VARIANTS[f"without_{name}"] = [f"{key}={OFF[key]}" for key in (override.split("=")[0] for override in VARIANTS[name])]
VARIANTS["without_all"] = [override for name in PARTS for override in VARIANTS[f"without_{name}"]]
# Architecture options (issue 28), not part of "all": on top of the config as it is.
VARIANTS["layer_norm"] = ["model.layer_norm=true"]
VARIANTS["attention"] = ["model.attention=true"]
VARIANTS["attention_layer_norm"] = ["model.attention=true", "model.layer_norm=true"]


def evaluate(run: Path, text: str) -> tuple[float, float | None]:
    """Perplexity of ``text`` without and (if the run fitted one) with the cache."""
    cache = ["--cache"] if (run / "cache.json").is_file() else []
    output = subprocess.run([sys.executable, "-m", "keras_rnnlm.evaluate", "--model", str(run), "--text", text, *cache],
                            check=True, capture_output=True, text=True).stdout
    without = float(re.search(r"^perplexity:\s+([\d.]+)", output, re.M).group(1))
    with_cache = re.search(r"^with the cache:.*perplexity ([\d.]+)", output, re.M)
    return without, float(with_cache.group(1)) if with_cache else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "psalms_bptt.toml"))
    parser.add_argument("--minutes", type=float, default=6.0,
                        help="training minutes of each variant (default: 6); 0: each trains until early stopping "
                             "(equal treatment on a machine that is shared)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--corpus", help="training text (default: the config's)")
    parser.add_argument("--valid", help="validation text (default: the config's held-out part)")
    parser.add_argument("--test", help="a test text to score each model on")
    parser.add_argument("--output-dir", default="/tmp/keras_rnnlm_regularization")
    parser.add_argument("--set", action="append", default=[], help="config overrides for every variant")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")

    texts = [*(["--corpus", args.corpus] if args.corpus else []), *(["--valid", args.valid] if args.valid else [])]
    rows = []
    for name in names:
        overrides = [*args.set, "train.epochs=1000", f"train.max_minutes={args.minutes}", "train.sample_length=0",
                     *VARIANTS[name]]
        started = time.time()
        subprocess.run([sys.executable, "-m", "keras_rnnlm.train", "--config", args.config, *texts,
                        "--run-name", f"regularization_{name}", "--output-dir", args.output_dir,
                        *(arg for override in overrides for arg in ("--set", override))], check=True)
        run = Path(args.output_dir) / f"regularization_{name}"
        summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
        row = {"variant": name, "overrides": VARIANTS[name], "epochs": summary["epochs"], "best_epoch": summary["best_epoch"],
               "val_perplexity": summary["val_perplexity"], "cache_val_perplexity": summary.get("cache_val_perplexity"),
               "seconds": round(time.time() - started)}
        if args.test:
            row["test_perplexity"], row["cache_test_perplexity"] = evaluate(run, args.test)
        rows.append(row)
        print(json.dumps(row), flush=True)

    def figure(value):
        return "—" if value is None else f"{value:.2f}"

    print(f"\n{f'{args.minutes:g} minutes' if args.minutes else 'until early stopping'} each, {args.config}")
    print("| variant | epochs (best) | validation | with the cache |" + (" test | test with the cache |" if args.test else ""))
    print("|---|---|---|---|" + ("---|---|" if args.test else ""))
    for row in rows:
        line = (f"| {row['variant']} ({', '.join(row['overrides']) or 'as the config'}) | {row['epochs']} ({row['best_epoch']}) "
                f"| {figure(row['val_perplexity'])} | {figure(row['cache_val_perplexity'])} |")
        if args.test:
            line += f" {figure(row['test_perplexity'])} | {figure(row['cache_test_perplexity'])} |"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
