"""WikiText-2 quality benchmark: train the default architecture, report validation perplexity.

Trains on ``wiki.train.tokens`` with ``configs/wikitext2.toml`` (the default
architecture, 5-token windows, a vocabulary holding all 33,278 WikiText-2 types), then
scores ``wiki.valid.tokens`` and ``wiki.test.tokens`` with ``python -m keras_rnnlm.evaluate``.
Reference on the same split: an interpolated modified Kneser-Ney 5-gram scores 232.5
on ``wiki.valid.tokens``.

Usage (from the project root; the data lives beside the project, never inside it):
    python benchmarks/wikitext2.py [--data ../shared/data/wikitext-2] [--output-dir /tmp/bench] [--set train.epochs=6]

Rerunning the same command resumes an interrupted benchmark at its last finished epoch.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "wikitext-2"))
    parser.add_argument("--output-dir", default="/tmp/keras_rnnlm_bench")
    parser.add_argument("--set", action="append", default=[], help="config overrides passed to training")
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "wiki.train.tokens").is_file():
        print(f"WikiText-2 not found in {data}; pass --data DIR holding wiki.{{train,valid,test}}.tokens", file=sys.stderr)
        return 2

    started = time.time()
    overrides = [arg for override in args.set for arg in ("--set", override)]
    subprocess.run(
        [sys.executable, "-m", "keras_rnnlm.train", "--config", str(ROOT / "configs" / "wikitext2.toml"),
         "--corpus", str(data / "wiki.train.tokens"), "--valid", str(data / "wiki.valid.tokens"),
         "--output-dir", args.output_dir, *overrides],
        check=True,
    )
    print(f"training wall time this invocation: {time.time() - started:.0f} s")
    for split in ("valid", "test"):
        print(f"--- wiki.{split}.tokens")
        subprocess.run(
            [sys.executable, "-m", "keras_rnnlm.evaluate", "--model", str(Path(args.output_dir) / "wikitext2"),
             "--text", str(data / f"wiki.{split}.tokens")],
            check=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
