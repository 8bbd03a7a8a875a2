"""WikiText-2 quality benchmark: train, then report validation and test perplexity.

Trains on ``wiki.train.tokens`` with ``--config`` (default ``configs/wikitext2.toml``:
the default architecture, 5-token windows; ``configs/wikitext2_bptt.toml``: truncated
BPTT, a 2-layer tied LSTM), a vocabulary holding all 33,278 WikiText-2 types, then scores
``wiki.valid.tokens`` and ``wiki.test.tokens`` with ``python -m keras_rnnlm.evaluate``
(a bptt run: every token in order, the state carried, as published figures are scored;
with the continuous cache too when the run fitted one).
References on the same split: an interpolated modified Kneser-Ney 5-gram scores 232.5 on
``wiki.valid.tokens``; the PyTorch word-language-model example (2 x 200 LSTM, BPTT 35)
117.6 test after 6 epochs, 110.4 tied.

Usage (from the project root; the data lives beside the project, never inside it):
    python benchmarks/wikitext2.py [--config configs/wikitext2_bptt.toml] [--data ../shared/data/wikitext-2]
        [--output-dir /tmp/bench] [--set train.epochs=6]

Rerunning the same command resumes an interrupted benchmark at its last finished epoch.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "wikitext2.toml"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "wikitext-2"))
    parser.add_argument("--output-dir", default="/tmp/keras_rnnlm_bench")
    parser.add_argument("--set", action="append", default=[], help="config overrides passed to training")
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "wiki.train.tokens").is_file():
        print(f"WikiText-2 not found in {data}; pass --data DIR holding wiki.{{train,valid,test}}.tokens", file=sys.stderr)
        return 2

    run_name = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))["name"]  # the run folder
    started = time.time()
    overrides = [arg for override in args.set for arg in ("--set", override)]
    training = subprocess.run(
        [sys.executable, "-m", "keras_rnnlm.train", "--config", args.config,
         "--corpus", str(data / "wiki.train.tokens"), "--valid", str(data / "wiki.valid.tokens"),
         "--output-dir", args.output_dir, *overrides],
        check=False,
    )
    if training.returncode != 0:
        return training.returncode  # training printed why
    print(f"training wall time this invocation: {time.time() - started:.0f} s")
    run = Path(args.output_dir) / run_name
    cache = ["--cache"] if (run / "cache.json").is_file() else []  # a bptt run fitted one: score with and without it
    for split in ("valid", "test"):
        print(f"--- wiki.{split}.tokens")
        scoring = subprocess.run(
            [sys.executable, "-m", "keras_rnnlm.evaluate", "--model", str(run), "--text", str(data / f"wiki.{split}.tokens"),
             *cache],
            check=False,
        )
        if scoring.returncode != 0:
            return scoring.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
