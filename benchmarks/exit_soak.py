"""How long a finished run takes to exit: the time from its "done:" line to the end of the
process, over many short runs of both data modes through the command line.

A run once printed "done:" and then took minutes to exit, its main thread waiting in the
destructor of a tf.data iterator (tf.data's autotune thread missed the cancellation and
slept out its period, up to 60 s). This starts ``--runs`` short ``python -m
keras_rnnlm.train`` runs, alternating windows and bptt mode (the bptt ones shaped as the
report: 32 lanes, 128 units), on a synthetic corpus, and reports each one's exit time
and the whole run's. ``--busy N`` keeps N more processes spinning meanwhile, as a test
suite's other worker or another job does: the stall showed most under such load.

Usage:
    python benchmarks/exit_soak.py [--runs 20] [--words 60000] [--busy 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import write_corpus  # noqa: E402

MODES = {
    "windows": ["--set", "train.epochs=2"],
    "bptt": ["--set", "data.mode=bptt", "--set", "data.batch_size=32", "--set", "model.units=128",
             "--set", "train.epochs=3"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--words", type=int, default=60_000, help="words in the synthetic corpus")
    parser.add_argument("--busy", type=int, default=0, help="processes kept spinning meanwhile (default: none)")
    args = parser.parse_args()
    exits, wholes = {mode: [] for mode in MODES}, {mode: [] for mode in MODES}
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        run_all(args, exits, wholes)
    finally:
        for spinner in spinners:
            spinner.kill()
    every = [seconds for values in exits.values() for seconds in values]
    print(f"{len(every)} runs: exit after the last line in {statistics.median(every):.2f} s (median), "
          f"{max(every):.2f} s at most; whole runs {min(map(min, wholes.values())):.1f} to {max(map(max, wholes.values())):.1f} s")
    print(json.dumps({"seconds": exits, "median": statistics.median(every), "max": max(every), "runs": wholes}))


def run_all(args, exits: dict, wholes: dict) -> None:
    """The runs, each one's exit time (and whole time) appended to its mode's list."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        write_corpus(folder / "corpus.txt", args.words)
        for number in range(args.runs):
            mode = list(MODES)[number % len(MODES)]
            command = [sys.executable, "-m", "keras_rnnlm.train", "--corpus", str(folder / "corpus.txt"),
                       "--output-dir", str(folder / "runs"), "--run-name", f"run{number}", "--set", "train.sample_length=0",
                       "--set", "train.tensorboard=false", *MODES[mode]]
            started = time.perf_counter()
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            done = None
            for line in process.stderr:
                if line.startswith("done:"):
                    done = time.perf_counter()
            process.wait()
            ended = time.perf_counter()
            if process.returncode != 0 or done is None:
                raise SystemExit(f"run {number} ({mode}) failed with status {process.returncode}")
            exits[mode].append(ended - done)
            wholes[mode].append(ended - started)
            print(f"run {number:2d} ({mode:>7}): exited {ended - done:.2f} s after its last line, {ended - started:.1f} s "
                  "in all", flush=True)


if __name__ == "__main__":
    main()
