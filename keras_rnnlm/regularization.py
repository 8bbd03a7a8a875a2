"""The regularization of AWD-LSTM (Merity et al. 2017) that lives only in training:
layers the training model puts in place of, or beside, the stock layers, reading the
same weights, so that ``model.keras`` stays the stock model.

:func:`keras_rnnlm.model.regularized` (called by ``training_model``) is the one place
they are chosen, from the ``model`` config keys (each off by default):

==================================  ===============================  ===========================================
key                                 in training                      what it does
==================================  ===============================  ===========================================
``model.weight_dropout``            :class:`WeightDroppedLSTMCell`   DropConnect on the hidden-to-hidden
                                    in a ``keras.layers.RNN``        weights: one mask a training step, the
                                                                     same at every position and in every lane
``model.word_dropout``              :class:`WordDroppedEmbedding`    drops whole word types: every occurrence
                                                                     of a dropped word in a step reads zeros
``model.activation_regularization`` :class:`ActivationPenalty`       adds ``alpha * mean(h ** 2)`` of the top
                                                                     layer's dropped output to the loss
``model.temporal_activation_        :class:`ActivationPenalty`       adds ``beta * mean((h_t - h_t-1) ** 2)``
regularization``                                                     of its output before dropout
==================================  ===============================  ===========================================

(``model.locked_dropout``, the fourth part, is stock: the ``Dropout`` layers of
:func:`~keras_rnnlm.model.build_model` draw one mask a sequence instead of one a token.)

Outside training each is the stock computation: ``tests/test_regularization.py`` holds
the swapped layers equal to the stock ones they stand in for, and
``benchmarks/regularization.py`` measures what each buys.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from keras_rnnlm.keras_private import PerCallMasks
from keras_rnnlm.speedups import lstm_cell


class WeightDroppedLSTMCell(PerCallMasks, layers.Layer):
    """A ``keras.layers.LSTMCell``'s step, its recurrent kernel multiplied in training by
    a DropConnect mask (Wan et al. 2013), the same mask for every position of a call:
    ``keras.layers.RNN`` draws it once before its loop, as it draws a cell's recurrent
    dropout mask, and clears it after.

    Args:
        cell: The stock, built ``LSTMCell`` whose weights this reads.
        rate: The share of the recurrent kernel's weights dropped, in [0, 1).
        seed: Seeds the masks.
    """

    def __init__(self, cell: layers.LSTMCell, rate: float, seed: int | None = None, **kwargs):
        super().__init__(name=f"{cell.name}_weight_dropped", dtype=cell.dtype_policy, **kwargs)
        self.cell = cell
        self.units = cell.units
        self.state_size = cell.state_size
        self.output_size = cell.output_size
        self.dropout = 0.0  # DropoutRNNCell's input mask: none
        self.recurrent_dropout = rate
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = cell.built

    def get_recurrent_dropout_mask(self, step_input):
        # The RNN asks with the state, (lanes, units); the mask has the kernel's shape.
        return super().get_recurrent_dropout_mask(self.cell.recurrent_kernel)

    def call(self, inputs, states, training=False):
        hidden, memory = states  # (lanes, units) each
        recurrent_kernel = self.cell.recurrent_kernel  # (units, 4 * units)
        mask = self.get_recurrent_dropout_mask(hidden)
        if training and mask is not None:
            recurrent_kernel = recurrent_kernel * mask
        gates = (ops.matmul(inputs, ops.cast(self.cell.kernel, self.compute_dtype))
                 + ops.matmul(hidden, ops.cast(recurrent_kernel, self.compute_dtype)))  # (lanes, 4 * units)
        gates = ops.cast(gates, "float32") + ops.cast(self.cell.bias, "float32")
        hidden, memory = lstm_cell(gates, ops.cast(memory, "float32"))
        hidden, memory = ops.cast(hidden, self.compute_dtype), ops.cast(memory, self.compute_dtype)
        return hidden, [hidden, memory]


def weight_dropped(layer: layers.RNN, rate: float, seed: int, stateful: bool) -> layers.RNN:
    """A ``keras.layers.RNN`` computing ``layer`` (a stock LSTM layer, or an RNN of an
    ``LSTMCell``) with its recurrent kernel DropConnect-dropped in training; its weights
    are ``layer``'s."""
    return layers.RNN(
        WeightDroppedLSTMCell(layer.cell, rate, seed),
        return_sequences=layer.return_sequences,
        stateful=stateful,
        unroll=layer.unroll,
        name=f"{layer.name}_weight_dropped",
    )


class WordDroppedEmbedding(layers.Layer):
    """An ``Embedding`` whose training calls drop whole word types (AWD-LSTM's embedding
    dropout, Gal & Ghahramani 2016): each step, each vocabulary row is kept with
    probability ``1 - rate`` and scaled by ``1 / (1 - rate)``, so every occurrence of a
    dropped word in that step reads zeros. Outside training, the embedding itself.

    Args:
        embedding: The stock, built ``Embedding`` whose matrix this reads.
        rate: The share of word types dropped a step, in [0, 1).
        seed: Seeds the masks.
    """

    def __init__(self, embedding: layers.Embedding, rate: float, seed: int | None = None, **kwargs):
        super().__init__(name=f"{embedding.name}_word_dropped", dtype=embedding.dtype_policy, **kwargs)
        self.embedding = embedding
        self.rate = rate
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    @property
    def embeddings(self):
        return self.embedding.embeddings

    def call(self, ids, training=False):
        vectors = self.embedding(ids)  # (batch, time, embedding_dim)
        if not training or not self.rate:
            return vectors
        kept = keras.random.dropout(ops.ones((self.embedding.input_dim, 1), self.compute_dtype), self.rate,
                                    seed=self.seed_generator)  # (vocabulary, 1): 0 or 1 / (1 - rate)
        return vectors * ops.take(kept, ids, axis=0)  # (batch, time, 1) broadcast over the features

    def compute_mask(self, ids, mask=None):
        return self.embedding.compute_mask(ids, mask)

    def compute_output_shape(self, input_shape):
        return self.embedding.compute_output_shape(input_shape)


# The names of the penalties in the training logs: the logged ``loss`` includes them, and
# :class:`keras_rnnlm.callbacks.Perplexity` takes them out of the training perplexity.
PENALTIES = ("ar", "tar")


class ActivationPenalty(layers.Layer):
    """Passes its input through; in training, adds a penalty on it to the loss (AWD-LSTM's
    activation regularization, AR, and temporal activation regularization, TAR):
    ``alpha * mean(h ** 2)`` keeps the activations small, ``beta * mean((h_t - h_t-1) ** 2)``
    keeps them from changing fast from one token to the next. The penalty is also a
    metric named as the layer (one of :data:`PENALTIES`), so the logs show it.

    Args:
        alpha: The weight of the AR term; 0 = none.
        beta: The weight of the TAR term (sequences only); 0 = none.
    """

    def __init__(self, alpha: float = 0.0, beta: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.beta = alpha, beta
        self.supports_masking = True
        self.penalty = keras.metrics.Mean(name=self.name)

    def call(self, features, training=False):
        if training:
            values = ops.cast(features, "float32")  # (batch, time, units)
            penalty = 0.0
            if self.alpha:
                penalty += self.alpha * ops.mean(ops.square(values))
            if self.beta:
                penalty += self.beta * ops.mean(ops.square(values[:, 1:] - values[:, :-1]))
            self.add_loss(penalty)
            self.penalty.update_state(penalty)
        return features
