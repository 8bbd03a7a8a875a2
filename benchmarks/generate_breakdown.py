"""Where a generation step's time goes, for the default architecture (issue 3 diagnosis).

Prints: the machine's float32 and bfloat16 matmul throughput (a 2048^3 product and the
Dense layer's own shape), and the time of each piece of one step at batch 1 and 64 when
called on its own: the Keras model as trained, then the generator's own logits step
(keras_rnnlm.inference) and its block sampler.

Usage:
    python benchmarks/generate_breakdown.py
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_rnnlm.config import ModelConfig  # noqa: E402
from keras_rnnlm.sampling import sample_in_blocks  # noqa: E402
from keras_rnnlm.inference import NextTokenLogits  # noqa: E402
from keras_rnnlm.model import build_model  # noqa: E402

VOCABULARY_SIZE, WINDOW_SIZE = 10_000, 5


def median_seconds(function, *arguments, calls=100, repeats=3) -> float:
    function(*arguments)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            function(*arguments)
        times.append((time.perf_counter() - started) / calls)
    return statistics.median(times)


def matmul_throughput() -> None:
    multiply = tf.function(tf.linalg.matmul)
    for dtype in (tf.float32, tf.bfloat16):
        for m, k, n in ((2048, 2048, 2048), (64, 256, VOCABULARY_SIZE)):
            a = tf.cast(tf.random.normal((m, k)), dtype)
            b = tf.cast(tf.random.normal((k, n)), dtype)
            seconds = median_seconds(multiply, a, b, calls=max(3, int(2e10 // (2 * m * k * n))))
            print(f"matmul {dtype.name:>8} {m}x{k}x{n}: {2 * m * k * n / seconds / 1e9:6.0f} GFLOPS")


def step_pieces(model) -> None:
    body = keras.Sequential(model.layers[:-2])  # all but the output Dense and its softmax
    dense = keras.Sequential(model.layers[-2:])
    banned = tf.constant(np.isin(np.arange(VOCABULARY_SIZE), [0, 1]))
    pieces = {
        "whole model": tf.function(lambda w: model(w, training=False)),
        "embedding + LSTM": tf.function(lambda w: body(w, training=False)),
    }
    for batch in (1, 64):
        windows = tf.zeros((batch, WINDOW_SIZE), tf.int32)
        for name, function in pieces.items():
            print(f"batch {batch:>2} {name:>24}: {median_seconds(function, windows) * 1e3:.2f} ms")
        hidden = body(windows)
        probabilities = model(windows)
        softmax = tf.function(lambda h: dense(h))
        sample = tf.function(
            lambda p: tf.random.stateless_categorical(tf.where(banned, -np.inf, tf.math.log(p)), 1, seed=[1, 2])
        )
        print(f"batch {batch:>2} {'Dense + softmax':>24}: {median_seconds(softmax, hidden) * 1e3:.2f} ms")
        print(f"batch {batch:>2} {'log, mask, categorical':>24}: {median_seconds(sample, probabilities) * 1e3:.2f} ms")


def generator_pieces(model) -> None:
    """The generator's own step (keras_rnnlm.inference) and sampler, each called on its own."""
    steps = NextTokenLogits(model, VOCABULARY_SIZE, [0, 1]).prepare()  # the shared part computed once, as in the loop
    start = tf.function(steps.start)
    # One token: read the last id (advance every LSTM chain), then the next logits.
    step = tf.function(lambda state, ids: steps.logits(steps.advance(state, ids)))
    sample = tf.function(lambda logits: sample_in_blocks(logits, tf.random.stateless_uniform([tf.shape(logits)[0], 2], [1, 2])))
    for batch in (1, 64):
        state, ids = start(tf.zeros((batch, WINDOW_SIZE), tf.int32)), tf.zeros((batch,), tf.int32)
        logits = step(state, ids)
        print(f"batch {batch:>2} {'generator logits step':>24}: {median_seconds(step, state, ids) * 1e3:.2f} ms")
        print(f"batch {batch:>2} {'generator block sampler':>24}: {median_seconds(sample, logits) * 1e3:.2f} ms")


def main() -> None:
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(), WINDOW_SIZE, VOCABULARY_SIZE)
    matmul_throughput()
    step_pieces(model)
    generator_pieces(model)


if __name__ == "__main__":
    main()
