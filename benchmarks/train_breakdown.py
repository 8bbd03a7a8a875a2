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
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from keras_rnnlm import speedups
from keras_rnnlm.config import ModelConfig, TrainConfig
from keras_rnnlm.devices import on_gpu, select_strategy, set_precision
from keras_rnnlm.model import build_model, compile_model, training_model
from keras_rnnlm.optimizers import FusedAdam
from keras_rnnlm.speedups import NextTokenCrossEntropy, WindowLSTM

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
    """Dense(10,000), the softmax and the loss, forward and backward: the stock model's
    way (a float32 softmax output; Keras' loss finds its logits) and the training model's
    (float32 logits; NextTokenCrossEntropy)."""
    hidden = tf.random.normal((BATCH_SIZE, units), dtype=tf.float32)
    kernel = tf.Variable(tf.random.normal((units, VOCABULARY_SIZE), stddev=0.05))
    bias = tf.Variable(tf.zeros((VOCABULARY_SIZE,)))
    targets = tf.random.uniform((BATCH_SIZE,), 0, VOCABULARY_SIZE, dtype=tf.int32)

    def logits_of(hidden):
        return tf.cast(tf.matmul(tf.cast(hidden, dtype), tf.cast(kernel, dtype)), tf.float32) + bias

    def loss_piece(loss, output):
        @tf.function
        def forward_backward(hidden):
            with tf.GradientTape() as tape:
                tape.watch(hidden)
                value = loss(targets, output(logits_of(hidden)))
            return tape.gradient(value, [hidden, kernel, bias])
        return forward_backward

    name = dtype.name
    keras_loss = loss_piece(keras.losses.SparseCategoricalCrossentropy(), keras.activations.softmax)
    next_token_loss = loss_piece(NextTokenCrossEntropy(), tf.identity)
    return {
        f"Dense + softmax + Keras loss ({name})": (keras_loss, hidden),
        f"Dense + NextTokenCrossEntropy ({name})": (next_token_loss, hidden),
    }


def lstm_pieces(config: ModelConfig, precision: str) -> dict:
    """The LSTM layer on embedded windows, forward and backward: Keras' LSTM (its loop and
    unrolled) and keras_rnnlm's WindowLSTM over an unrolled LSTM (as training runs it on a
    CPU in mixed precision; in float32 training uses Keras' unrolled LSTM)."""
    keras.mixed_precision.set_global_policy(precision)
    try:
        layers = {
            "Keras LSTM, loop": keras.layers.LSTM(config.units),
            "Keras LSTM, unrolled": keras.layers.LSTM(config.units, unroll=True),
        }
        inputs = tf.random.normal((BATCH_SIZE, WINDOW_SIZE, config.embedding_dim), dtype=layers["Keras LSTM, loop"].compute_dtype)
        for layer in layers.values():
            layer.build(inputs.shape)
        layers["WindowLSTM, unrolled"] = WindowLSTM(layers["Keras LSTM, unrolled"])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    pieces = {}
    for name, layer in layers.items():

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
    the model built as the CLI builds it (precision "auto", the LSTM unrolled on a CPU):
    the stock model as compiled for model.keras (Keras' LSTM, Adam and loss), the
    training model without WindowLSTM (Keras' LSTM), and the training model as the CLI
    trains it."""
    strategy = select_strategy("auto")
    windows = tf.random.uniform((BATCH_SIZE, WINDOW_SIZE), 0, VOCABULARY_SIZE, dtype=tf.int32)
    targets = tf.random.uniform((BATCH_SIZE,), 0, VOCABULARY_SIZE, dtype=tf.int32)
    pieces = {}
    for name in ("Keras' LSTM, Adam and loss", "Keras' LSTM", "as the CLI: WindowLSTM, FusedAdam, NextTokenCrossEntropy"):
        policy = set_precision("auto", strategy)
        model = build_model(ModelConfig(), WINDOW_SIZE, VOCABULARY_SIZE, unroll=not on_gpu(strategy))
        compile_model(model, TrainConfig())
        if name == "Keras' LSTM":
            with mock.patch.object(speedups, "takes_window_path", lambda layer: False):
                model = training_model(model, TrainConfig())
        elif name.startswith("as the CLI"):
            model = training_model(model, TrainConfig())
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
