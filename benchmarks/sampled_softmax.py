"""Sampled softmax against the full softmax: training speed, memory and quality.

``speed``: windows trained per second and peak memory, each softmax in a fresh process
(alternating, ``--repeats`` times; medians), for the default model at each
``--vocabulary`` size, on random Zipf-distributed ids (the input pipeline is the same for
both, so it is left out). ``quality``: WikiText-2 trained with each softmax for the same
wall time, validation perplexity (always the full softmax) every ``--check-steps`` steps.

Usage (from the project root):
    python benchmarks/sampled_softmax.py speed [--vocabulary 33279 200000] [--candidates 1024] [--repeats 3] [--adam dense]
    python benchmarks/sampled_softmax.py quality [--minutes 20] [--data ../shared/data/wikitext-2] [--output-dir /tmp/ss] [--adam dense]

``--adam dense`` runs the sampled softmax with Adam's dense update of every row instead of
SparseRowsAdam's update of the touched rows: an experiment, for what the sparse update
saves per second and what it costs per step.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WINDOW, BATCH = 5, 256


def use_dense_adam() -> None:
    """An experiment: sampled softmax with Adam's dense update of every row (FusedAdam)
    in place of the touched rows' (SparseRowsAdam), to see what the sparse update buys."""
    import keras_rnnlm.optimizers

    keras_rnnlm.optimizers.SparseRowsAdam = keras_rnnlm.optimizers.FusedAdam


def measure(vocabulary: int, softmax: str, candidates: int, steps: int, adam: str = "rows") -> dict:
    """Trains ``steps`` steps of the default model in this process: windows a second
    (from the median step) and peak resident memory."""
    import keras
    import numpy as np
    import tensorflow as tf

    if adam == "dense":
        use_dense_adam()

    from keras_rnnlm.config import Config
    from keras_rnnlm.devices import select_strategy, set_precision
    from keras_rnnlm.model import build_model, compile_model, training_model

    config = Config()
    strategy = select_strategy("auto")
    # float32 for both: "auto" times a matmul in each process, and two processes could choose differently
    policy = set_precision("float32", strategy)
    with strategy.scope():
        model = build_model(config.model, WINDOW, vocabulary, unroll=True)
        compile_model(model, config.train)
        trainer = training_model(model, config.train, sampled_candidates=candidates if softmax == "sampled" else 0)
    rng = np.random.default_rng(0)
    zipf = 1.0 / np.arange(1, vocabulary + 1)
    ids = rng.choice(vocabulary, size=(64 * BATCH, WINDOW + 1), p=zipf / zipf.sum()).astype(np.int32)
    batches = tf.data.Dataset.from_tensor_slices((ids[:, :WINDOW], ids[:, WINDOW])).batch(BATCH).repeat()

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times, self.started = [], 0.0

        def on_train_batch_begin(self, batch, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self.started)

    trainer.fit(batches, steps_per_epoch=5, epochs=1, verbose=0)  # traces the step
    timer = StepTimes()
    trainer.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer])
    return {"vocabulary": vocabulary, "softmax": softmax, "candidates": candidates, "precision": str(policy),
            "windows_per_second": BATCH / statistics.median(timer.times),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def speed(args) -> None:
    results = []
    for vocabulary in args.vocabulary:
        runs = {"full": [], "sampled": []}
        for _ in range(args.repeats):
            for softmax in ("full", "sampled"):
                output = subprocess.run(
                    [sys.executable, __file__, "_measure", str(vocabulary), softmax, str(args.candidates), str(args.steps), args.adam],
                    capture_output=True, text=True, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                )
                runs[softmax].append(json.loads(output.stdout.strip().splitlines()[-1]))
        full, sampled = ({key: statistics.median(run[key] for run in runs[softmax])
                          for key in ("windows_per_second", "peak_rss_mib")} for softmax in ("full", "sampled"))
        row = {"vocabulary": vocabulary, "candidates": args.candidates, "precision": runs["full"][0]["precision"],
               "full": full, "sampled": sampled, "speedup": sampled["windows_per_second"] / full["windows_per_second"],
               "runs": runs}
        results.append(row)
        print(f"vocabulary {vocabulary:,}, {args.candidates} candidates ({row['precision']}): full {full['windows_per_second']:,.0f} "
              f"windows/s, {full['peak_rss_mib']:,.0f} MiB; sampled {sampled['windows_per_second']:,.0f} windows/s, "
              f"{sampled['peak_rss_mib']:,.0f} MiB; speed-up {row['speedup']:.2f}x", flush=True)
    print(json.dumps(results))


def quality(args) -> None:
    import keras

    from keras_rnnlm.config import load_config
    from keras_rnnlm.train import train

    data = Path(args.data)
    if not (data / "wiki.train.tokens").is_file():
        sys.exit(f"WikiText-2 not found in {data}; pass --data DIR holding wiki.{{train,valid}}.tokens")
    budget = args.minutes * 60

    class WallClock(keras.callbacks.Callback):
        """Stops training once the budget is spent (validation still runs) and records
        each check: seconds since the start, steps, validation perplexity."""

        def __init__(self):
            super().__init__()
            self.started, self.steps, self.checks = time.time(), 0, []

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if time.time() - self.started >= budget:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            self.checks.append({"seconds": round(time.time() - self.started, 1), "steps": self.steps,
                                "val_perplexity": logs["val_perplexity"], "loss": logs["loss"]})
            print(f"{self.checks[-1]}", flush=True)

    if args.adam == "dense":
        use_dense_adam()
    results = {}
    for softmax in args.softmax:
        overrides = [f"model.softmax={json.dumps(softmax)}", f"model.sampled_candidates={args.candidates}",
                     f"train.steps_per_epoch={args.check_steps}", "train.epochs=1000", "train.early_stopping_patience=0",
                     "train.sample_length=0", "train.tensorboard=false",
                     'train.precision="float32"']  # "auto" times a matmul per run, and two runs could choose differently
        config = load_config(ROOT / "configs" / "wikitext2.toml", overrides + args.set)
        config = config.__class__(**{**config.__dict__, "corpus": config.corpus.__class__(
            **{**config.corpus.__dict__, "paths": (str(data / "wiki.train.tokens"),), "valid_paths": (str(data / "wiki.valid.tokens"),)})})
        clock = WallClock()
        print(f"--- {softmax} softmax, {args.minutes} minutes", flush=True)
        train(config, Path(args.output_dir) / softmax, overwrite=True, extra_callbacks=[clock], verbose=0)
        results[softmax] = clock.checks
    Path(args.output_dir, "quality.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_measure":
        vocabulary, softmax, candidates, steps, adam = sys.argv[2:7]
        print(json.dumps(measure(int(vocabulary), softmax, int(candidates), int(steps), adam)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    timing = commands.add_parser("speed", help="windows a second and memory, full against sampled")
    timing.add_argument("--vocabulary", type=int, nargs="+", default=[33_279, 200_000])
    timing.add_argument("--candidates", type=int, default=1024)
    timing.add_argument("--steps", type=int, default=30)
    timing.add_argument("--repeats", type=int, default=3)
    timing.add_argument("--adam", choices=("rows", "dense"), default="rows", help="sampled runs' Adam: the touched rows' update, or (an experiment) the dense one")
    judged = commands.add_parser("quality", help="WikiText-2 validation perplexity after the same wall time")
    judged.add_argument("--minutes", type=float, default=20)
    judged.add_argument("--check-steps", type=int, default=1000, help="validation every this many steps")
    judged.add_argument("--candidates", type=int, default=1024)
    judged.add_argument("--softmax", nargs="+", default=["full", "sampled"])
    judged.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "wikitext-2"))
    judged.add_argument("--output-dir", default="/tmp/keras_rnnlm_sampled")
    judged.add_argument("--set", action="append", default=[], help="more config overrides, section.key=value")
    judged.add_argument("--adam", choices=("rows", "dense"), default="rows", help="sampled runs' Adam: the touched rows' update, or (an experiment) the dense one")
    args = parser.parse_args()
    speed(args) if args.command == "speed" else quality(args)


if __name__ == "__main__":
    main()
