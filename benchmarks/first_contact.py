"""First contact: how long a command takes to report a mistake, against importing
TensorFlow (which it no longer waits for).

Runs ``python -m keras_rnnlm.train --corpus missing.txt`` and ``python -c "import
tensorflow"`` ``--repeats`` times each, alternating, each in a fresh process, and prints the
median wall time of each and their ratio; also checks that the command printed exactly one
line and exited with status 2.

Usage:
    python benchmarks/first_contact.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "train --corpus missing.txt": [sys.executable, "-m", "keras_rnnlm.train", "--corpus", "missing.txt"],
    "import tensorflow": [sys.executable, "-c", "import tensorflow"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    seconds = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for name, command in COMMANDS.items():
                started = time.perf_counter()
                result = subprocess.run(command, capture_output=True, text=True, cwd=folder, check=False)
                seconds[name].append(time.perf_counter() - started)
                if name.startswith("train") and (result.returncode != 2 or len(result.stderr.splitlines()) != 1):
                    raise SystemExit(f"expected one line and status 2, got {result.returncode}:\n{result.stderr}")
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, value in medians.items():
        print(f"{name:>28}: {value:.2f} s (median of {args.repeats})")
    ratio = medians["train --corpus missing.txt"] / medians["import tensorflow"]
    print(f"the mistake is reported in {ratio:.2f} of the time TensorFlow takes to import")
    print(json.dumps({"seconds": seconds, "medians": medians, "ratio": ratio}))


if __name__ == "__main__":
    main()
