"""The next token's logits from a trained model, computed fast for generation.

The generator calls the model once per generated token, on a small batch, so what costs
time is not arithmetic but the number of TensorFlow ops per step and every pass over the
(batch, vocabulary) output. Calling the Keras model as it is trained costs, per token, a
``tf.while_loop`` over the window inside the LSTM layer, the input projection of every
window position, a softmax and a log. :class:`NextTokenLogits` computes the same numbers
with fewer ops:

- The Embedding and the first LSTM layer's input kernel and bias are folded into one
  table (vocabulary, 4 * units), so a window position's input projection is a gather.
- The LSTM steps over the window are unrolled (the window is short and fixed).
- The output layer yields logits (no softmax, no log); its bias row is multiplied by a
  column of ones inside the one matmul, and banned ids get a bias of -inf, so neither
  adding the bias nor masking needs a pass of its own.
- The logits are padded with -inf to a whole number of :data:`BLOCK` columns, which is
  what the generator's two-level sampler reads.

A model that is not Embedding -> LSTM layers -> Dense softmax (a GRU, say) runs its own
layers up to the output layer; any other callable that returns probabilities is read
through a log. Tests hold every path equal to the Keras model's probabilities.

How much this and the generator's other changes gained is measured by
``benchmarks/generate_speed.py`` and written down in benchmarks/RESULTS.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

BLOCK = 128  # Ids per sampling block; near the square root of a typical vocabulary.


class NextTokenLogits:
    """Maps windows to the next token's logits.

    Args:
        model: A Keras model (or any callable) from int32 windows (batch, window_size) to
            probabilities (batch, vocabulary_size).
        vocabulary_size: Ids the model scores.
        banned_ids: Ids that must never be chosen (``<pad>``, ``<unk>``).

    Call :meth:`prepare` once inside a ``tf.function``, before the generation loop: it
    computes what every step shares and returns the step function.
    """

    def __init__(self, model, vocabulary_size: int, banned_ids: Sequence[int]):
        self.model = model
        self.vocabulary_size = vocabulary_size
        self.padded_size = -(-vocabulary_size // BLOCK) * BLOCK
        self.banned_ids = list(banned_ids)
        layers = model.layers if isinstance(model, keras.Sequential) else []
        self.output_layer = layers[-1] if layers and _is_softmax_dense(layers[-1], vocabulary_size) else None
        self.lstm_layers = _lstm_stack(layers[:-1]) if self.output_layer is not None else None

    def prepare(self) -> Callable[[tf.Tensor], tf.Tensor]:
        """Returns ``step(windows) -> logits``: int32 (batch, window_size) to float32
        (batch, padded_size), where banned and padding ids are -inf."""
        if self.output_layer is None:
            return self._logits_from_probabilities
        kernel = _weight(self.output_layer.kernel)  # (units, vocabulary)
        bias = tf.tensor_scatter_nd_update(
            _weight(self.output_layer.bias),
            [[number] for number in self.banned_ids],
            tf.fill([len(self.banned_ids)], -np.inf),
        )
        padding = self.padded_size - self.vocabulary_size
        kernel_and_bias = tf.pad(tf.concat([kernel, bias[tf.newaxis]], axis=0), [[0, 0], [0, padding]])
        kernel_and_bias = tf.tensor_scatter_nd_update(
            kernel_and_bias,
            [[kernel.shape[0], column] for column in range(self.vocabulary_size, self.padded_size)],
            tf.fill([padding], -np.inf),
        )  # (units + 1, padded_size): the last row is the bias
        features = self._lstm_features() if self.lstm_layers is not None else self._keras_features

        def step(windows):
            hidden = features(windows)  # (batch, units)
            ones = tf.ones_like(hidden[:, :1])
            return tf.matmul(tf.concat([hidden, ones], axis=1), kernel_and_bias)  # (batch, padded_size)

        return step

    def _keras_features(self, windows):
        hidden = windows
        for layer in self.model.layers[:-1]:
            hidden = layer(hidden, training=False)
        return tf.cast(hidden, tf.float32)

    def _lstm_features(self):
        embedding, first = self.lstm_layers[0], self.lstm_layers[1]
        # (vocabulary, 4 * units): each id's input projection in the first LSTM layer.
        table = tf.matmul(_weight(embedding.embeddings), _weight(first.cell.kernel)) + _weight(first.cell.bias)

        def features(windows):
            inputs = [tf.gather(table, windows[:, position]) for position in range(windows.shape[1])]
            for number, layer in enumerate(self.lstm_layers[1:]):
                if number > 0:  # the layer below returned every position; project them here
                    inputs = [tf.matmul(hidden, _weight(layer.cell.kernel)) + _weight(layer.cell.bias) for hidden in inputs]
                inputs = _unrolled_lstm(inputs, _weight(layer.cell.recurrent_kernel))
            return inputs[-1]  # (batch, units)

        return features

    def _logits_from_probabilities(self, windows):
        probabilities = tf.cast(self.model(windows, training=False), tf.float32)  # (batch, vocabulary)
        banned = np.isin(np.arange(self.vocabulary_size), self.banned_ids)
        logits = tf.where(banned, -np.inf, tf.math.log(probabilities))
        return tf.pad(logits, [[0, 0], [0, self.padded_size - self.vocabulary_size]], constant_values=-np.inf)


def _unrolled_lstm(projected_inputs, recurrent_kernel):
    """Keras' LSTM cell (gates input, forget, cell, output; sigmoid and tanh) from zero
    state over the window. Returns the hidden state after every position."""
    hiddens, hidden, cell = [], None, None
    for gates in projected_inputs:  # (batch, 4 * units) each
        if hidden is not None:
            gates += tf.matmul(hidden, recurrent_kernel)
        i, f, g, o = tf.split(gates, 4, axis=1)
        new = tf.sigmoid(i) * tf.tanh(g)
        cell = new if cell is None else tf.sigmoid(f) * cell + new
        hidden = tf.sigmoid(o) * tf.tanh(cell)
        hiddens.append(hidden)
    return hiddens


def _weight(variable):
    return tf.cast(variable, tf.float32)


def _is_softmax_dense(layer, vocabulary_size: int) -> bool:
    return (
        isinstance(layer, keras.layers.Dense)
        and layer.activation is keras.activations.softmax
        and layer.use_bias
        and layer.units == vocabulary_size
    )


def _lstm_stack(layers) -> list | None:
    """[embedding, lstm, lstm, ...] when the layers are an Embedding, then plain LSTM
    layers (dropout between them is inactive when generating); else None."""
    layers = [layer for layer in layers if not isinstance(layer, keras.layers.Dropout)]
    if not layers or not isinstance(layers[0], keras.layers.Embedding) or layers[0].mask_zero:
        return None
    lstms = layers[1:]
    plain = all(
        type(layer) is keras.layers.LSTM
        and layer.cell.activation is keras.activations.tanh
        and layer.cell.recurrent_activation is keras.activations.sigmoid
        and layer.cell.use_bias
        and not layer.go_backwards
        and not layer.stateful
        and layer.return_sequences == (number < len(lstms) - 1)
        for number, layer in enumerate(lstms)
    )
    return [layers[0], *lstms] if lstms and plain else None
