"""Where a training step's time goes: the default model's pieces, each timed on its own.

Batch 256 of the default architecture (vocabulary 10,000, embedding 128, one LSTM of
256, window 5). Each piece is a compiled ``tf.function`` that runs the piece's forward
and backward pass (a ``GradientTape``) and returns the gradients; the whole step is
Keras' own train function on one batch, the model as the CLI builds it. Pieces are
called on their own, so each includes about 0.1-0.3 ms of call overhead. Float32 and, where it matters, bfloat16
(the weights cast once, outside the timed function, as a mixed policy would).

Usage:
    python benchmarks/train_breakdown.py [--calls 30] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from keras_rnnlm.config import ModelConfig, TrainConfig
from keras_rnnlm.devices import on_gpu, select_strategy, set_precision
from keras_rnnlm.model import (
    FusedAdam,
    NextTokenCrossEntropy,
    NextTokenMetrics,
    WindowLSTM,
    build_model,
    compile_model,
)

VOCABULARY_SIZE, WINDOW_SIZE, BATCH_SIZE = 10_000, 5, 256


def median_ms(pieces: dict, calls: int, repeats: int = 5) -> dict[str, float]:
    """Each piece's median time per call, the pieces taking turns so that machine noise
    falls on all of them alike."""
    times = {name: [] for name in pieces}
    for function, *arguments in pieces.values():
        function(*arguments)  # traces and warms up
    for _ in range(repeats):
        for name, (function, *arguments) in pieces.items():
            started = time.perf_counter()
            for _ in range(calls):
                result = function(*arguments)
            tf.nest.map_structure(lambda tensor: tensor.numpy(), result)
            times[name].append((time.perf_counter() - started) / calls)
    return {name: statistics.median(seconds) * 1e3 for name, seconds in times.items()}


def output_layer_pieces(units: int, dtype) -> dict:
    """Dense(10,000) and the loss, forward and backward, two ways."""
    hidden = tf.random.normal((BATCH_SIZE, units), dtype=tf.float32)
    kernel = tf.Variable(tf.random.normal((units, VOCABULARY_SIZE), stddev=0.05))
    bias = tf.Variable(tf.zeros((VOCABULARY_SIZE,)))
    targets = tf.random.uniform((BATCH_SIZE,), 0, VOCABULARY_SIZE, dtype=tf.int32)

    def logits_of(hidden):
        return tf.cast(tf.matmul(tf.cast(hidden, dtype), tf.cast(kernel, dtype)), tf.float32) + bias

    def loss_piece(loss):  # the model's way: a float32 softmax output, the loss reads it
        @tf.function
        def forward_backward(hidden):
            with tf.GradientTape() as tape:
                tape.watch(hidden)
                probabilities = keras.activations.softmax(logits_of(hidden))
                value = loss(targets, probabilities)
            return tape.gradient(value, [hidden, kernel, bias])
        return forward_backward

    name = dtype.name
    return {
        f"Dense + softmax + Keras loss ({name})": (loss_piece(keras.losses.SparseCategoricalCrossentropy()), hidden),
        f"Dense + softmax + NextTokenCrossEntropy ({name})": (loss_piece(NextTokenCrossEntropy()), hidden),
    }


def lstm_pieces(config: ModelConfig, precision: str) -> dict:
    """The LSTM layer on embedded windows, forward and backward: Keras' LSTM (its loop and
    unrolled) and keras_rnnlm's WindowLSTM (unrolled, as the CLI runs it on a CPU)."""
    keras.mixed_precision.set_global_policy(precision)
    try:
        layers = {
            "Keras LSTM, loop": keras.layers.LSTM(config.units),
            "Keras LSTM, unrolled": keras.layers.LSTM(config.units, unroll=True),
            "WindowLSTM, unrolled": WindowLSTM(config.units, unroll=True),
        }
    finally:
        keras.mixed_precision.set_global_policy("float32")
    pieces = {}
    for name, layer in layers.items():
        inputs = tf.random.normal((BATCH_SIZE, WINDOW_SIZE, config.embedding_dim), dtype=layer.compute_dtype)
        layer.build(inputs.shape)

        @tf.function
        def forward_backward(inputs, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                loss = tf.reduce_sum(tf.cast(layer(inputs, training=True), tf.float32))
            return tape.gradient(loss, [inputs, *layer.trainable_weights])

        pieces[f"{name} ({precision})"] = (forward_backward, inputs)
    return pieces


def whole_steps() -> dict:
    """Keras' own train function on one batch (forward, backward, clipping, Adam, metrics),
    the model built as the CLI builds it (precision "auto", the LSTM unrolled on a CPU),
    with Keras' LSTM, Adam and loss, with Keras' LSTM only, and as the CLI."""
    strategy = select_strategy("auto")
    windows = tf.random.uniform((BATCH_SIZE, WINDOW_SIZE), 0, VOCABULARY_SIZE, dtype=tf.int32)
    targets = tf.random.uniform((BATCH_SIZE,), 0, VOCABULARY_SIZE, dtype=tf.int32)
    pieces = {}
    for name in ("Keras' LSTM, Adam and loss", "Keras' LSTM", "as the CLI: WindowLSTM, FusedAdam, NextTokenCrossEntropy"):
        policy = set_precision("auto", strategy)
        model = build_model(ModelConfig(), WINDOW_SIZE, VOCABULARY_SIZE, unroll=not on_gpu(strategy))
        if name.startswith("Keras' LSTM"):
            for layer in model.layers:
                if isinstance(layer, WindowLSTM):
                    layer.WINDOW_PATH_DTYPES = ()  # never its own path: Keras' LSTM
        compile_model(model, TrainConfig())
        if name.startswith("Keras' LSTM, Adam"):
            model.compile(optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=1.0),
                          loss=keras.losses.SparseCategoricalCrossentropy(), metrics=[NextTokenMetrics()])
        keras.mixed_precision.set_global_policy("float32")
        model.train_on_batch(windows, targets)  # builds the optimizer and the train function
        pieces[f"train step, {policy}, {name}"] = (lambda model=model: model.train_function([(windows, targets)]),)
    return pieces


def optimizer_pieces(model_config: ModelConfig) -> dict:
    """One Adam update with global norm clipping of the default model's weights."""
    shapes = [(VOCABULARY_SIZE, model_config.embedding_dim), (model_config.embedding_dim, 4 * model_config.units),
              (model_config.units, 4 * model_config.units), (4 * model_config.units,),
              (model_config.units, VOCABULARY_SIZE), (VOCABULARY_SIZE,)]
    gradients = [tf.random.normal(shape, stddev=0.01) for shape in shapes]
    pieces = {}
    for name, optimizer in (("Keras Adam", keras.optimizers.Adam(1e-3, global_clipnorm=1.0)),
                            ("FusedAdam", FusedAdam(1e-3, global_clipnorm=1.0))):
        weights = [keras.Variable(tf.random.normal(shape)) for shape in shapes]
        optimizer.build(weights)
        pieces[f"update of {sum(np.prod(shape) for shape in shapes) / 1e6:.1f}M weights, {name}"] = (
            _applying(optimizer, gradients, weights),
        )
    return pieces


def _applying(optimizer, gradients, weights):
    @tf.function
    def apply():  # the variables are closed over: as arguments they would become tensors
        optimizer.apply(gradients, weights)
        return optimizer.iterations.value  # something to wait for
    return apply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=30, help="calls per timing")
    parser.add_argument("--repeats", type=int, default=5, help="timings per piece (the median is shown)")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    config = ModelConfig()
    pieces = {
        **whole_steps(),
        **optimizer_pieces(config),
        **output_layer_pieces(config.units, tf.float32),
        **output_layer_pieces(config.units, tf.bfloat16),
        **lstm_pieces(config, "float32"),
        **lstm_pieces(config, "mixed_bfloat16"),
    }
    print(f"batch {BATCH_SIZE}, vocabulary {VOCABULARY_SIZE:,}, embedding {config.embedding_dim}, "
          f"LSTM {config.units}, window {WINDOW_SIZE}; medians of {args.repeats} x {args.calls} calls; "
          f"TensorFlow {tf.__version__}")
    milliseconds = median_ms(pieces, calls=args.calls, repeats=args.repeats)
    for name, value in milliseconds.items():
        print(f"{name:>56}: {value:7.2f} ms")
    print(json.dumps({"milliseconds": milliseconds}))


if __name__ == "__main__":
    main()
