"""Kill soak: runs killed with SIGKILL at random moments resume and end exactly where an
uninterrupted run ends.

Trains a small config without interruption (twice, the faster start timing the run), then ``--runs`` times: starts
``python -m keras_rnnlm.train`` into a fresh folder, kills it (``kill -9``) after a random
delay (so kills land in epochs, in validation, in checkpoint and backup writes, in the
final save), starts the same command again, and so on until a start finishes. Each
finished run must have the uninterrupted run's ``history.csv`` and the same weights in
``model.keras`` (float32, within ``--tolerance``), and no folder may be left unusable.

Usage:
    python benchmarks/kill_soak.py [--runs 20] [--workdir /tmp/keras_rnnlm_kill_soak] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

SONG = "cause baby now we got bad blood\nyou know it used to be mad love\n"
SETTINGS = [
    "--set", "model.embedding_dim=16", "--set", "model.units=32", "--set", "model.dropout=0.3",
    "--set", "data.batch_size=16", "--set", "train.epochs=6", "--set", "train.learning_rate=0.02",
    "--set", "train.reduce_lr_patience=1", "--set", "train.early_stopping_patience=2",
    "--set", "train.precision='float32'", "--set", "train.sample_length=4", "--set", "train.tensorboard=false",
    "--set", "train.backup_every_steps=20",  # about 50 steps an epoch: kills inside an epoch resume mid-epoch too
]


def command(corpus: Path, output_dir: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "keras_rnnlm.train", "--corpus", str(corpus), "--output-dir", str(output_dir),
            "--run-name", name, *SETTINGS]


def weights(run: Path) -> list:
    import keras

    return keras.saving.load_model(run / "model.keras", compile=False).get_weights()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--workdir", default="/tmp/keras_rnnlm_kill_soak")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument("--tolerance", type=float, default=1e-6)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    corpus = workdir / "song.txt"
    corpus.write_text(SONG * 60, encoding="utf-8")

    seconds = []
    for _ in range(2):  # the second start is warm (file caches), like the soak's starts
        shutil.rmtree(workdir / "whole", ignore_errors=True)
        started = time.perf_counter()
        subprocess.run(command(corpus, workdir, "whole"), check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
    whole_seconds = min(seconds)
    whole_history = (workdir / "whole" / "history.csv").read_text()
    whole_weights = weights(workdir / "whole")
    print(f"uninterrupted run: {whole_seconds:.1f} s", flush=True)

    import numpy as np

    rng = random.Random(args.seed)
    results = []
    for number in range(args.runs):
        name, kills, starts = f"killed_{number}", 0, 0
        while True:
            starts += 1
            process = subprocess.Popen(command(corpus, workdir, name), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            # A run's first start is killed before an uninterrupted run would finish (between
            # TensorFlow's import and the final save); a restart may finish.
            # (Starts vary by about 10%: 0.95 of the time let 5 of 20 first starts finish.)
            latest = 0.8 * whole_seconds if starts == 1 else whole_seconds
            try:
                process.wait(timeout=rng.uniform(1.0, latest))
            except subprocess.TimeoutExpired:
                process.kill()  # SIGKILL
                process.wait()
                kills += 1
                continue
            if process.returncode != 0:
                raise SystemExit(f"{name}: start {starts} failed:\n{process.stderr.read().decode()[-2000:]}")
            break
        same_history = (workdir / name / "history.csv").read_text() == whole_history
        largest = max(float(np.max(np.abs(a - b))) for a, b in zip(weights(workdir / name), whole_weights, strict=True))
        equal = same_history and largest <= args.tolerance
        results.append({"run": number, "kills": kills, "starts": starts, "same_history": same_history,
                        "largest_weight_difference": largest, "equal": equal})
        print(f"run {number}: killed {kills} times, {'equal' if equal else 'DIFFERENT'} "
              f"(history {'same' if same_history else 'differs'}, weights within {largest:.1e})", flush=True)
    finished_equal = sum(result["equal"] for result in results)
    killed = sum(result["kills"] > 0 for result in results)
    print(f"{finished_equal}/{args.runs} finished equal to the uninterrupted run; {killed}/{args.runs} killed at "
          f"least once; {sum(result['kills'] for result in results)} kills in all")
    print(json.dumps({"runs": results, "equal": finished_equal, "killed": killed,
                      "uninterrupted_seconds": round(whole_seconds, 1)}))


if __name__ == "__main__":
    main()
