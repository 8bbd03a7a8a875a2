"""How keras_rnnlm trains the model faster than stock Keras would: measured speed paths,
swapped in for training and kept out of what is saved.

:func:`keras_rnnlm.model.training_model` is the one place they are chosen: it builds the
model that trains the stock model's weights (the same layer objects) with these swaps:

===========================================  =========================  ==================================
stock Keras                                  swapped in for training    why
===========================================  =========================  ==================================
``keras.layers.LSTM``, unrolled, under a     :class:`WindowLSTM`,       one input matmul for the whole
16-bit compute dtype (mixed bfloat16 on a    reading the LSTM's own     window, no recurrent matmul at the
CPU)                                         weights                    first position, and float32 gate
                                                                        arithmetic (faster than bfloat16
                                                                        element-wise ops on a CPU)
``Dense`` -> ``Activation("softmax")`` ->    the ``Dense``'s logits ->  one float32 softmax that is both the
``SparseCategoricalCrossentropy``            :class:`NextTokenCross-    loss and its gradient (softmax minus
                                             Entropy`                   one-hot), instead of TensorFlow's
                                                                        slow CPU kernel for sparse softmax
                                                                        cross-entropy
``keras.optimizers.Adam``                    :class:`~keras_rnnlm.      TensorFlow's one-kernel Adam update
                                             optimizers.FusedAdam`      instead of about ten element-wise
                                                                        ops per weight
===========================================  =========================  ==================================

Each is held equal to its stock piece by ``tests/test_speedups.py``, and
``benchmarks/train_breakdown.py`` times each against it (figures: benchmarks/RESULTS.md).
What is saved (``model.keras``) is the stock model, compiled with the stock pieces;
:func:`keras_rnnlm.optimizers.copy_optimizer_state` carries the trained optimizer's
state over to it.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

SIXTEEN_BIT = ("bfloat16", "float16")


def takes_window_path(layer: keras.layers.Layer) -> bool:
    """Whether :class:`WindowLSTM` computes ``layer`` faster: a plain unrolled LSTM (the
    CPU's choice; on a GPU the cuDNN kernel is faster) under a 16-bit compute dtype. In
    float32 the path measured no faster than Keras' unrolled LSTM
    (``benchmarks/train_breakdown.py``), so there Keras' LSTM trains."""
    cell = getattr(layer, "cell", None)
    return (
        type(layer) is keras.layers.LSTM
        and layer.unroll
        and layer.compute_dtype in SIXTEEN_BIT
        and not (layer.stateful or layer.go_backwards or layer.return_state)
        and cell.activation is keras.activations.tanh
        and cell.recurrent_activation is keras.activations.sigmoid
        and cell.use_bias
        and cell.dropout == 0
        and cell.recurrent_dropout == 0
    )


class WindowLSTM(keras.layers.Layer):
    """An LSTM layer's function over a window, computed another way; its weights are the
    LSTM's own.

    Unrolled, Keras runs its LSTM cell at every position: an input and a recurrent
    matmul, then the gate arithmetic in the compute dtype. This projects the inputs of
    all positions in one matmul, skips the recurrent matmul at the first position (its
    state is zero), and keeps the gate arithmetic in float32. It always starts from zero
    state and takes no mask, as the windows of :mod:`keras_rnnlm.data` need.

    Args:
        lstm: A built ``keras.layers.LSTM`` for which :func:`takes_window_path` holds.
    """

    def __init__(self, lstm: keras.layers.LSTM, **kwargs):
        super().__init__(name=f"{lstm.name}_window", dtype=lstm.dtype_policy, **kwargs)
        self.lstm = lstm

    def call(self, sequences):
        cell = self.lstm.cell
        window, inputs = sequences.shape[1], sequences.shape[2]
        by_position = tf.transpose(sequences, [1, 0, 2])  # (window, batch, inputs)
        projected = tf.matmul(tf.reshape(by_position, [-1, inputs]), tf.cast(cell.kernel, self.compute_dtype))
        projected = tf.cast(projected, tf.float32) + tf.cast(cell.bias, tf.float32)  # (window * batch, 4 * units)
        gates_from_inputs = tf.unstack(tf.reshape(projected, [window, -1, 4 * cell.units]))  # window x (batch, 4 * units)
        recurrent_kernel = tf.cast(cell.recurrent_kernel, self.compute_dtype)
        hidden, memory, hiddens = None, None, []
        for gates in gates_from_inputs:
            if hidden is not None:
                gates += tf.cast(tf.matmul(tf.cast(hidden, self.compute_dtype), recurrent_kernel), tf.float32)
            hidden, memory = lstm_cell(gates, memory)
            hiddens.append(hidden)
        output = tf.stack(hiddens, axis=1) if self.lstm.return_sequences else hidden  # (batch, window, units) or (batch, units)
        return tf.cast(output, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return self.lstm.compute_output_shape(input_shape)


def lstm_cell(gates, memory=None):
    """Keras' LSTM cell (gates input, forget, cell, output; sigmoid and tanh): the new
    (hidden, memory) states from the summed input and recurrent projections. ``memory``
    None is a zero memory."""
    i, f, g, o = tf.split(gates, 4, axis=-1)
    memory = tf.sigmoid(i) * tf.tanh(g) if memory is None else tf.sigmoid(f) * memory + tf.sigmoid(i) * tf.tanh(g)
    return tf.sigmoid(o) * tf.tanh(memory), memory


class NextTokenCrossEntropy(keras.losses.Loss):
    """``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``, computed through
    one float32 softmax that also gives the gradient.

    Keras' loss runs TensorFlow's SparseSoftmaxCrossEntropyWithLogits, whose CPU kernel
    is slow. The gradient of the cross-entropy with respect to the logits is the softmax
    minus the one-hot target: this loss computes the softmax once, reads the target's
    probability from it for the loss, and hands that gradient straight to the logits.
    """

    def call(self, y_true, y_pred):
        targets = tf.cast(y_true, tf.int32)  # (batch,) or (batch, time)
        logits = tf.reshape(y_pred, [-1, tf.shape(y_pred)[-1]])  # (targets, vocabulary)
        return tf.reshape(_cross_entropy_from_logits(tf.reshape(targets, [-1]), logits), tf.shape(targets))


@tf.custom_gradient
def _cross_entropy_from_logits(targets, logits):
    """``-log softmax(logits)[target]`` per row; the gradient is ``softmax - one-hot``
    (the one-hot never built: the target entries are decremented in place).

    A probability that underflowed to 0 counts as the smallest float32: the loss is at
    most 87.3 nats, reached only when the target's logit trails by that much.
    """
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32))  # (batch, vocabulary)
    target_entries = tf.stack([tf.range(tf.shape(targets)[0]), targets], axis=1)  # (batch, 2)
    chosen = tf.gather_nd(probabilities, target_entries)  # (batch,)
    losses = -tf.math.log(tf.maximum(chosen, np.finfo(np.float32).tiny))

    def gradient(upstream):  # (batch,)
        to_logits = tf.tensor_scatter_nd_sub(probabilities, target_entries, tf.ones_like(chosen)) * upstream[:, tf.newaxis]
        return None, tf.cast(to_logits, logits.dtype)

    return losses, gradient
