"""Where a generation step's time goes, for the default architecture (issue 3 diagnosis).

Prints: the machine's float32 and bfloat16 matmul throughput (a 2048^3 product and the
Dense layer's own shape), the time of each piece of one step at batch 1 and 64 when
called on its own, and the tokens per second of an experimental hand-fused LSTM step
(input projections precomputed per vocabulary entry, the window's steps unrolled, logits
without softmax and log) against the generator's compiled loop.

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
from keras_rnnlm.generate import Generator  # noqa: E402
from keras_rnnlm.model import build_model  # noqa: E402
from keras_rnnlm.tokenizer import Tokenizer  # noqa: E402
from keras_rnnlm.vocab import Vocabulary  # noqa: E402

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
    body = keras.Sequential(model.layers[:-1])
    dense = model.layers[-1]
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


def fused_lstm_experiment(model, generator) -> None:
    embedding, lstm, dense = model.layers[0], model.layers[1], model.layers[-1]
    banned = tf.constant(np.isin(np.arange(VOCABULARY_SIZE), [0, 1]))

    def logits_of(windows, table):  # Keras LSTM gate order: input, forget, cell, output.
        hidden = cell = None
        for position in range(WINDOW_SIZE):
            gates = tf.gather(table, windows[:, position])  # (batch, 4 * units)
            if hidden is not None:
                gates += tf.matmul(hidden, lstm.cell.recurrent_kernel)
            i, f, g, o = tf.split(gates, 4, axis=1)
            new = tf.sigmoid(i) * tf.tanh(g)
            cell = new if cell is None else tf.sigmoid(f) * cell + new
            hidden = tf.sigmoid(o) * tf.tanh(cell)
        return tf.matmul(hidden, dense.kernel) + dense.bias  # (batch, vocabulary)

    @tf.function
    def fused_loop(windows, num_tokens):
        table = tf.matmul(embedding.embeddings, lstm.cell.kernel) + lstm.cell.bias  # (vocabulary, 4 * units)

        def step(index, windows, generated):
            logits = tf.where(banned, -np.inf, logits_of(windows, table))
            ids = tf.random.stateless_categorical(logits, 1, seed=tf.stack([0, index]), dtype=tf.int32)[:, 0]
            return index + 1, tf.concat([windows[:, 1:], ids[:, tf.newaxis]], 1), generated.write(index, ids)

        _, _, generated = tf.while_loop(
            lambda index, *_: index < num_tokens, step, (0, windows, tf.TensorArray(tf.int32, size=num_tokens))
        )
        return generated.stack()

    check = tf.constant(np.random.default_rng(0).integers(3, VOCABULARY_SIZE, (4, WINDOW_SIZE)), tf.int32)
    table = tf.matmul(embedding.embeddings, lstm.cell.kernel) + lstm.cell.bias
    difference = tf.reduce_max(tf.abs(tf.nn.softmax(logits_of(check, table)) - model(check)))
    print(f"fused step vs model, largest probability difference: {float(difference):.1e}")
    for batch, num_tokens in ((1, 2000), (64, 500)):
        windows = tf.zeros((batch, WINDOW_SIZE), tf.int32)
        fused = median_seconds(lambda: fused_loop(windows, tf.constant(num_tokens)).numpy(), calls=1)
        compiled = median_seconds(lambda: generator.generate_ids(windows, num_tokens, 1.0, 0, 1.0, 0, 0).numpy(), calls=1)
        print(f"batch {batch:>2}: generator {batch * num_tokens / compiled:8,.0f} tokens/s, "
              f"fused experiment {batch * num_tokens / fused:8,.0f} tokens/s")


def main() -> None:
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(), WINDOW_SIZE, VOCABULARY_SIZE)
    vocabulary = Vocabulary(["<pad>", "<unk>", "<eol>"] + [f"w{i}" for i in range(VOCABULARY_SIZE - 3)])
    generator = Generator(model, vocabulary, Tokenizer(), WINDOW_SIZE)
    matmul_throughput()
    step_pieces(model)
    fused_lstm_experiment(model, generator)


if __name__ == "__main__":
    main()
