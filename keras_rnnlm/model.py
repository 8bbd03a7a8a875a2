"""The language model: Embedding -> recurrent layers -> Dropout -> Dense softmax.

The defaults keep the recurrent layers eligible for the fused cuDNN kernel on a GPU
(default activations, no recurrent dropout); a config that loses it gets a warning.
"""

from __future__ import annotations

import logging

import keras
from keras import layers, ops

from keras_rnnlm.config import ModelConfig, TrainConfig

logger = logging.getLogger("keras_rnnlm")

_CELLS = {"lstm": layers.LSTM, "gru": layers.GRU, "simple_rnn": layers.SimpleRNN}


@keras.saving.register_keras_serializable(package="keras_rnnlm")
class Perplexity(keras.metrics.Mean):
    """exp of the mean cross-entropy over every example seen (the whole epoch).

    Averaging the cross-entropy first and exponentiating once is the standard
    definition; the mean of per-batch perplexities would overstate it.
    """

    def __init__(self, name="perplexity", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        cross_entropy = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)  # (batch,)
        super().update_state(cross_entropy, sample_weight=sample_weight)

    def result(self):
        return ops.exp(super().result())


def build_model(config: ModelConfig, window_size: int, vocabulary_size: int) -> keras.Sequential:
    """Builds the (uncompiled) model.

    Args:
        config: Sizes, cell and dropout.
        window_size: Tokens of context per example.
        vocabulary_size: Number of token ids, reserved tokens included.

    Returns:
        A ``keras.Sequential`` mapping int32 windows (batch, window_size) to next-token
        probabilities (batch, vocabulary_size), always in float32.
    """
    if config.cell == "simple_rnn" or config.recurrent_dropout > 0:
        logger.warning(
            "warning: model.cell = %r with recurrent_dropout = %s cannot use the fused cuDNN kernel; "
            "on a GPU this model trains several times slower than the default LSTM",
            config.cell,
            config.recurrent_dropout,
        )
    stack = [
        keras.Input((window_size,), dtype="int32"),
        layers.Embedding(vocabulary_size, config.embedding_dim, name="embedding"),  # (batch, window, embedding_dim)
    ]
    for number in range(config.layers):
        last = number == config.layers - 1
        stack.append(
            _CELLS[config.cell](
                config.units,
                return_sequences=not last,  # (batch, window, units) between layers, (batch, units) at the top
                recurrent_dropout=config.recurrent_dropout,
                name=f"{config.cell}_{number + 1}",
            )
        )
        stack.append(layers.Dropout(config.dropout, name=f"dropout_{number + 1}"))
    # The softmax stays in float32 under mixed precision: small probabilities underflow in 16 bits.
    stack.append(layers.Dense(vocabulary_size, activation="softmax", dtype="float32", name="next_token"))
    return keras.Sequential(stack, name="rnnlm")


# Weight matrices per recurrent step, as multiples of units x (inputs + units): the gates.
_GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}


def training_flops_per_window(config: ModelConfig, window_size: int, vocabulary_size: int) -> int:
    """Floating-point operations to train on one window: 2 per multiply-add, and the
    backward pass counted as twice the forward (gradients for inputs and for weights).

    The forward multiply-adds are the recurrent layers' input and recurrent kernels at
    every position of the window and the output layer once; the Embedding is a lookup.
    Element-wise work (activations, softmax, the optimizer) is not counted.
    """
    multiply_adds = 0
    inputs = config.embedding_dim
    for _ in range(config.layers):
        multiply_adds += window_size * _GATES[config.cell] * config.units * (inputs + config.units)
        inputs = config.units
    multiply_adds += config.units * vocabulary_size
    return 2 * 3 * multiply_adds


def compile_model(model: keras.Model, config: TrainConfig) -> None:
    """Compiles with sparse categorical cross-entropy, the configured optimizer and metrics.

    The loss is categorical cross-entropy computed from integer targets, so no
    vocabulary-wide one-hot vector is ever built.
    """
    clipping = {"global_clipnorm": config.clipnorm} if config.clipnorm > 0 else {}
    if config.optimizer == "adam":
        optimizer = keras.optimizers.Adam(config.learning_rate, **clipping)
    else:
        optimizer = keras.optimizers.SGD(config.learning_rate, **clipping)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy"),
            Perplexity(),
        ],
    )
