"""The language model: Embedding -> recurrent layers -> Dropout -> Dense -> softmax.

This is the model ``model.keras`` holds: stock Keras layers in a ``keras.Sequential``,
compiled with stock Keras loss, optimizer and metrics, so that Keras alone loads it
(``keras.saving.load_model``) and can predict with it or train it further. How
keras_rnnlm trains it faster, with the same weights, is :mod:`keras_rnnlm.speedups`.

The defaults keep the recurrent layers eligible for the fused cuDNN kernel on a GPU
(default activations, no recurrent dropout); a config that loses it gets a warning.
"""

from __future__ import annotations

import logging

import keras
from keras import layers

from keras_rnnlm.config import ModelConfig, TrainConfig

logger = logging.getLogger("keras_rnnlm")

CELLS = {"lstm": layers.LSTM, "gru": layers.GRU, "simple_rnn": layers.SimpleRNN}


def build_model(config: ModelConfig, window_size: int, vocabulary_size: int, unroll: bool = False) -> keras.Sequential:
    """Builds the (uncompiled) model.

    Args:
        config: Sizes, cell and dropout.
        window_size: Tokens of context per example.
        vocabulary_size: Number of token ids, reserved tokens included.
        unroll: Unroll the recurrent layers over the window. Faster on a CPU for short
            windows (no ``tf.while_loop``), but a GPU then loses the cuDNN kernel, so
            training turns it on for the CPU only. Defaults to False.

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
            CELLS[config.cell](
                config.units,
                return_sequences=not last,  # (batch, window, units) between layers, (batch, units) at the top
                recurrent_dropout=config.recurrent_dropout,
                unroll=unroll,
                name=f"{config.cell}_{number + 1}",
            )
        )
        stack.append(layers.Dropout(config.dropout, name=f"dropout_{number + 1}"))
    # The output matmul runs at the compute precision (the largest in the model); the
    # softmax runs in float32, as small probabilities underflow in 16 bits.
    stack.append(layers.Dense(vocabulary_size, name="next_token"))  # (batch, vocabulary): logits
    stack.append(layers.Activation("softmax", dtype="float32", name="probabilities"))
    return keras.Sequential(stack, name="rnnlm")


def compile_model(model: keras.Model, config: TrainConfig) -> None:
    """Compiles with stock Keras pieces, as ``model.keras`` keeps them: sparse categorical
    cross-entropy (integer targets: no one-hot vector is ever built), Adam or SGD with
    clipping by global norm, accuracy and top-5 accuracy. The optimizer is built, so its
    state can be saved with the model.
    """
    model.compile(optimizer=make_optimizer(config), loss=keras.losses.SparseCategoricalCrossentropy(), metrics=make_metrics())
    model.optimizer.build(model.trainable_variables)


def make_optimizer(config: TrainConfig, adam: type[keras.optimizers.Adam] = keras.optimizers.Adam) -> keras.optimizers.Optimizer:
    """The configured optimizer, clipping gradients by their global norm unless
    ``clipnorm`` is 0; ``adam`` is the Adam class to use."""
    clipping = {"global_clipnorm": config.clipnorm} if config.clipnorm > 0 else {}
    if config.optimizer == "adam":
        return adam(config.learning_rate, **clipping)
    return keras.optimizers.SGD(config.learning_rate, **clipping)


def make_metrics() -> list[keras.metrics.Metric]:
    """Accuracy and top-5 accuracy of the next token. Perplexity, exp of the mean
    cross-entropy, is the loss's (:class:`keras_rnnlm.callbacks.Perplexity`).

    Accuracy is top-1 accuracy: ``in_top_k`` is one pass over the (batch, vocabulary)
    output, where ``SparseCategoricalAccuracy``'s argmax took several times as long on a
    CPU (``benchmarks/train_breakdown.py``). A target tied with the best counts as right.
    """
    return [
        keras.metrics.SparseTopKCategoricalAccuracy(k=1, name="accuracy"),
        keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy"),
    ]
