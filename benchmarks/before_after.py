"""Training and generation speed of two checkouts, measured back to back on one machine.

A refactor must leave speed as it was. Speed drifts within a session, so the two
checkouts take turns: each round runs ``train_speed.py``, ``bptt_speed.py`` (float32 and
mixed bfloat16) and ``generate_speed.py`` (both modes) of the one, then of the other,
each checkout's own scripts and code (``PYTHONPATH`` set to it). The result is each
figure's median over every run of every round, and after over before; the naive recipe
of ``train_speed.py``, which neither checkout's code touches, shows the noise.

Usage:
    git worktree add ../before <commit>
    python benchmarks/before_after.py --before ../before [--after .] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

# Each benchmark: its arguments, and where in its JSON the speeds are.
BENCHMARKS = {
    "train_speed": (["--paths", "keras_rnnlm", "naive", "--repeats", "3"], "windows_per_second"),
    "bptt_speed": (["--paths", "keras_rnnlm_float32", "keras_rnnlm_mixed", "--repeats", "3"], "tokens_per_second"),
    "generate_speed windows": (["--repeats", "3", "--parts", "2"], "tokens_per_second"),
    "generate_speed bptt": (["--repeats", "3", "--mode", "bptt"], "tokens_per_second"),
}


def measure(checkout: Path, name: str) -> dict[str, list[float]]:
    """One run of a benchmark on a checkout: each path's speeds (one per repeat)."""
    arguments, key = BENCHMARKS[name]
    script = checkout / "benchmarks" / f"{name.split()[0]}.py"
    environment = {**os.environ, "PYTHONPATH": str(checkout), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, str(script), *arguments], capture_output=True, text=True,
                            env=environment, cwd=checkout, check=False)
    if result.returncode != 0:
        sys.exit(f"{script} failed on {checkout}:\n{result.stderr[-3000:]}")
    speeds = json.loads(result.stdout.strip().splitlines()[-1])
    return {path: runs for path, runs in speeds["runs"].items() if path in speeds[key]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the checkout before the change")
    parser.add_argument("--after", type=Path, default=HERE, help="the checkout after it (default: this one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    args = parser.parse_args()
    checkouts = {"before": args.before.resolve(), "after": args.after.resolve()}
    runs = {side: {} for side in checkouts}
    for round_number in range(args.rounds):
        for name in args.only:
            for side, checkout in checkouts.items():
                for path, speeds in measure(checkout, name).items():
                    runs[side].setdefault(f"{name}: {path}", []).extend(speeds)
                    print(f"round {round_number + 1}, {side}, {name}: {path} {statistics.median(speeds):,.0f}", flush=True)
    medians = {side: {figure: statistics.median(values) for figure, values in figures.items()} for side, figures in runs.items()}
    ratios = {figure: medians["after"][figure] / medians["before"][figure]
              for figure in medians["after"] if figure in medians["before"]}
    for figure, ratio in ratios.items():
        print(f"{figure}: {medians['before'][figure]:,.0f} -> {medians['after'][figure]:,.0f} ({ratio:.3f}x)")
    print(json.dumps({"medians": medians, "after_over_before": ratios, "runs": runs,
                      "checkouts": {side: str(path) for side, path in checkouts.items()}}))


if __name__ == "__main__":
    main()
