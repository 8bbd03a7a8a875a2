"""The stall of issue 26 in Keras' own ``fit``: one epoch of the default model on the same
cached batches, the dataset's tf.data autotuning on and off, alternating.

With autotuning on, deleting the iterator at the end of ``fit`` may wait for tf.data's
autotune thread (see ``iterator_teardown.py``); keras_rnnlm's pipelines turn it off.

Usage:
    python benchmarks/fit_stall.py [--fits 4] [--steps 150]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_rnnlm.config import Config  # noqa: E402
from keras_rnnlm.devices import set_precision  # noqa: E402
from keras_rnnlm.model import build_model, compile_model, training_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fits", type=int, default=4, help="one-epoch fits with each setting")
    parser.add_argument("--steps", type=int, default=150, help="batches of 256 windows an epoch")
    args = parser.parse_args()
    config = Config()
    set_precision(config.train.precision, tf.distribute.get_strategy())
    model = build_model(config.model, config.data.window_size, 10_000, unroll=True)
    compile_model(model, config.train)
    trainer = training_model(model, config.train)
    rng = np.random.default_rng(0)
    windows = rng.integers(3, 10_000, (256 * args.steps, config.data.window_size)).astype("int32")
    targets = rng.integers(3, 10_000, 256 * args.steps).astype("int32")
    datasets = {}
    for name, autotune in (("autotune on", True), ("autotune off", False)):
        options = tf.data.Options()
        options.autotune.enabled = autotune
        datasets[name] = tf.data.Dataset.from_tensor_slices((windows, targets)).batch(256).cache().with_options(options)
    trainer.fit(datasets["autotune off"], epochs=1, verbose=0)  # traces the step
    seconds = {name: [] for name in datasets}
    for number in range(args.fits):
        for name, dataset in datasets.items():
            started = time.perf_counter()
            trainer.fit(dataset, epochs=1, verbose=0)
            seconds[name].append(time.perf_counter() - started)
            print(f"{number} {name}: {seconds[name][-1]:.2f} s", flush=True)
    summary = {name: {"median": statistics.median(values), "max": max(values)} for name, values in seconds.items()}
    for name, figures in summary.items():
        print(f"{name}: median {figures['median']:.2f} s, max {figures['max']:.2f} s a fit")
    print(json.dumps({"summary": summary, "seconds": seconds}))


if __name__ == "__main__":
    main()
