"""The language model: Embedding -> recurrent layers -> Dropout -> Dense softmax.

The defaults keep the recurrent layers eligible for the fused cuDNN kernel on a GPU
(default activations, no recurrent dropout); a config that loses it gets a warning.
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from keras_rnnlm.config import ModelConfig, TrainConfig

logger = logging.getLogger("keras_rnnlm")


@keras.saving.register_keras_serializable(package="keras_rnnlm")
class WindowLSTM(layers.LSTM):
    """Keras' LSTM, with a faster unrolled path for reading short windows in mixed precision.

    Unrolled, Keras runs its LSTM cell at every position: an input and a recurrent
    matmul, then the gate arithmetic in the compute dtype. Under a 16-bit compute dtype
    (mixed bfloat16 on a CPU), when the state starts at zero (no initial state, mask,
    stateful state or dropout inside the layer), this layer instead projects the inputs
    of all positions in one matmul, skips the recurrent matmul at the first position (its
    state is zero), and does the gate arithmetic in float32, which on a CPU runs faster
    than bfloat16 element-wise ops. Same weights, same function (a test holds the outputs
    and gradients to Keras' own). Forward and backward at the default sizes took 15.3 ms
    against 20.4 for Keras' unrolled LSTM, and the whole train step 38.9 against 43.5
    (``benchmarks/train_breakdown.py``). In float32 the path measured no faster, so there,
    as when not unrolled (on a GPU, for the cuDNN kernel), it is Keras' LSTM.
    """

    WINDOW_PATH_DTYPES = ("bfloat16", "float16")

    def call(self, sequences, initial_state=None, mask=None, training=False):
        if not self._takes_window_path(initial_state, mask, training):
            return super().call(sequences, initial_state=initial_state, mask=mask, training=training)
        cell = self.cell
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
        output = tf.stack(hiddens, axis=1) if self.return_sequences else hidden  # (batch, window, units) or (batch, units)
        return tf.cast(output, self.compute_dtype)

    def _takes_window_path(self, initial_state, mask, training) -> bool:
        cell = self.cell
        return (
            self.unroll
            and self.compute_dtype in self.WINDOW_PATH_DTYPES
            and initial_state is None
            and mask is None
            and not self.stateful
            and not self.go_backwards
            and not self.return_state
            and cell.activation is keras.activations.tanh
            and cell.recurrent_activation is keras.activations.sigmoid
            and cell.use_bias
            and not (training and (cell.dropout or cell.recurrent_dropout))
        )


def lstm_cell(gates, memory=None):
    """Keras' LSTM cell (gates input, forget, cell, output; sigmoid and tanh): the new
    (hidden, memory) states from the summed input and recurrent projections. ``memory``
    None is a zero memory."""
    i, f, g, o = tf.split(gates, 4, axis=-1)
    memory = tf.sigmoid(i) * tf.tanh(g) if memory is None else tf.sigmoid(f) * memory + tf.sigmoid(i) * tf.tanh(g)
    return tf.sigmoid(o) * tf.tanh(memory), memory


_CELLS = {"lstm": WindowLSTM, "gru": layers.GRU, "simple_rnn": layers.SimpleRNN}


@keras.saving.register_keras_serializable(package="keras_rnnlm")
class NextTokenMetrics(keras.metrics.Metric):
    """Accuracy, top-5 accuracy and perplexity over every example seen (the whole epoch).

    Keras' own accuracy and top-k metrics and a cross-entropy metric each read the whole
    (batch, vocabulary) output; the three took a fifth of a training step
    (``benchmarks/train_breakdown.py``). Here the cross-entropy comes from the target's
    probability (one gather), and accuracy and top-5 accuracy from ``in_top_k``, one
    pass each that materializes nothing (a comparison, a cast and a sum would make three,
    and a (batch, vocabulary) temporary). A target tied with the best counts as correct.

    Perplexity is exp of the mean cross-entropy, the standard definition (the mean of
    per-batch perplexities would overstate it). The cross-entropy is read from the
    target's probability; it is exact unless that probability underflows float32.
    """

    def __init__(self, name="next_token", **kwargs):
        super().__init__(name=name, **kwargs)
        self.sums = self.add_variable((4,), initializer="zeros", dtype="float32", name="sums")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.cast(y_pred, "float32")  # (batch, vocabulary)
        y_true = ops.reshape(ops.cast(y_true, "int32"), (-1,))  # (batch,)
        target = ops.take_along_axis(y_pred, y_true[:, None], axis=1)[:, 0]  # (batch,): the target's probability
        cross_entropy = -ops.log(ops.maximum(target, np.finfo(np.float32).tiny))  # (batch,)
        correct, top5 = (ops.cast(ops.in_top_k(y_true, y_pred, k), "float32") for k in (1, 5))  # (batch,) each
        weight = ops.ones_like(target) if sample_weight is None else ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        per_example = ops.stack([weight, weight * cross_entropy, weight * correct, weight * top5])  # (4, batch)
        self.sums.assign_add(ops.sum(per_example, axis=1))

    def result(self):
        examples, cross_entropy, correct, top5 = ops.unstack(self.sums)
        examples = ops.maximum(examples, 1.0)
        return {
            "accuracy": correct / examples,
            "top5_accuracy": top5 / examples,
            "perplexity": ops.exp(cross_entropy / examples),
        }


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
            _CELLS[config.cell](
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


@keras.saving.register_keras_serializable(package="keras_rnnlm")
class FusedAdam(keras.optimizers.Adam):
    """Keras' Adam, each weight updated by TensorFlow's fused Adam kernel.

    Keras 3's Adam updates a weight with about ten element-wise ops, each a pass over the
    weight or its moments; ``ResourceApplyAdam`` (which tf.keras used) makes one. For the
    default model's 4.2M weights that took the update from 9.8 to 5.6 ms
    (``benchmarks/train_breakdown.py``). The arithmetic is Keras' own (a test holds the
    two equal); the kernel exists for CPU and GPU, and under a ``tf.distribute`` strategy
    it runs on each replica's copy as Keras' update does.
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = ops.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = ops.cast(self.beta_1, dtype), ops.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=ops.power(beta_1, step),
            beta2_power=ops.power(beta_2, step),
            lr=ops.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=ops.cast(self.epsilon, dtype),
            grad=tf.cast(tf.convert_to_tensor(gradient), dtype),  # an Embedding's sparse gradient made dense, as Keras' Adam does
        )


@keras.saving.register_keras_serializable(package="keras_rnnlm")
class NextTokenCrossEntropy(keras.losses.Loss):
    """Sparse categorical cross-entropy of a softmax output, its gradient taken straight
    to the softmax's logits.

    Keras' own loss recomputes the softmax from the logits through TensorFlow's
    SparseSoftmaxCrossEntropyWithLogits, whose CPU kernel is slow. The gradient of the
    cross-entropy with respect to the logits is the softmax minus the one-hot target,
    and the model has already computed the softmax: this loss reads the target's
    probability from it and hands that gradient to the logits, skipping the softmax's
    backward pass. The default output layer, softmax and loss in bfloat16 took 16.0 ms
    forward and backward against 20.0 with Keras' loss (``benchmarks/train_breakdown.py``).
    It finds the logits where Keras' loss does (Keras' softmax keeps them on its output);
    for any other output it is Keras' loss.
    """

    def call(self, y_true, y_pred):
        logits = getattr(y_pred, "_keras_logits", None)
        if logits is None:
            return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        return _cross_entropy_of_softmax(tf.cast(y_true, tf.int32), logits, y_pred)


@tf.custom_gradient
def _cross_entropy_of_softmax(targets, logits, probabilities):
    """``-log probabilities[target]`` per row, where ``probabilities = softmax(logits)``;
    the gradient goes to the logits only, as ``probabilities - one-hot`` (the one-hot never
    built: the target entries are decremented in place).

    A probability that underflowed to 0 counts as the smallest float32: the loss is at
    most 87.3 nats, reached only when the target's logit trails by that much.
    """
    target_entries = tf.stack([tf.range(tf.shape(targets)[0]), targets], axis=1)  # (batch, 2)
    chosen = tf.gather_nd(probabilities, target_entries)  # (batch,)
    losses = -tf.math.log(tf.maximum(chosen, np.finfo(np.float32).tiny))

    def gradient(upstream):  # (batch,)
        to_logits = tf.tensor_scatter_nd_sub(probabilities, target_entries, tf.ones_like(chosen)) * upstream[:, tf.newaxis]
        return None, tf.cast(to_logits, logits.dtype), None

    return losses, gradient


def compile_model(model: keras.Model, config: TrainConfig) -> None:
    """Compiles with sparse categorical cross-entropy, the configured optimizer and metrics.

    The loss is categorical cross-entropy computed from integer targets, so no
    vocabulary-wide one-hot vector is ever built.
    """
    clipping = {"global_clipnorm": config.clipnorm} if config.clipnorm > 0 else {}
    if config.optimizer == "adam":
        optimizer = FusedAdam(config.learning_rate, **clipping)
    else:
        optimizer = keras.optimizers.SGD(config.learning_rate, **clipping)
    model.compile(
        optimizer=optimizer,
        loss=NextTokenCrossEntropy(),
        metrics=[NextTokenMetrics()],
    )
