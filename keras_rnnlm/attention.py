"""Attention over a carried memory (issue 28): one stock ``MultiHeadAttention`` after the
last recurrent layer, reading the current tokens' outputs and a memory of the outputs
before them, carried from step to step with the gradient stopped (as Transformer-XL
carries its segments and SHA-RNN its memory; Merity 2019).

The saved model holds the block in stock layers: ``MultiHeadAttention`` over the text it
is given, causally, then ``Dropout`` and a residual ``Add``. What reads a text in steps
(bptt training, ``evaluate``, the cache, generation a token a step) runs the same
layers' arithmetic through :func:`attend`, which keeps each remembered output's key and
value projections rather than the output: a step projects only its own positions, where
calling the layer would project the whole memory again at every step (training with a
memory of 512 ran at 0.78x the plain LSTM's speed that way, 0.88x this way, for words;
benchmarks/RESULTS.md). Reading with fixed weights
(evaluation, generation) this is exact; in training the remembered keys and values are
the ones the weights of their own step made, and the key and value projections learn
from each step's positions (as a kNN memory keeps its keys: Wu et al. 2022, Memorizing
Transformers). :class:`CarriedMemoryAttention` carries the memory between steps as a
stateful LSTM carries its state. ``tests/test_attention.py`` holds them equal to the
stock block.
"""

from __future__ import annotations

from keras import layers, ops


def memory_mask(steps: int, memory: int, filled, valid):
    """Which keys each query may read: every filled memory slot and the valid current
    positions up to its own.

    Args:
        steps: Queries (the step's positions).
        memory: Memory slots before them.
        filled: bool (lanes, memory): the slots that hold an output.
        valid: bool (lanes, steps): the positions that hold a token (not padding).

    Returns:
        bool (lanes, steps, memory + steps).
    """
    query = ops.arange(steps)[:, None] + memory  # a query's own index among the keys
    key = ops.arange(memory + steps)[None, :]
    causal = query >= key  # (steps, memory + steps)
    keys_valid = ops.concatenate([filled, valid], axis=1)  # (lanes, memory + steps)
    return ops.logical_and(causal[None], keys_valid[:, None, :])


def memory_shapes(attention: layers.MultiHeadAttention, batch: int, size: int) -> tuple[tuple, tuple]:
    """The shapes of :func:`attend`'s memory of ``size`` projected keys and values per
    sequence: (batch, size, heads, key_dim) and (batch, size, heads, value_dim)."""
    heads = attention.num_heads
    return (batch, size, heads, attention.key_dim), (batch, size, heads, attention.value_dim or attention.key_dim)


def attend(attention: layers.MultiHeadAttention, features, keys, values, filled, valid=None):
    """The attention block's attention (without its residual add) for a step of
    positions, reading a memory of projected keys and values and the step's own
    positions up to each query: the arithmetic of the layer's own call (its public
    ``query_dense``, ``key_dense``, ``value_dense`` and ``output_dense``, the scores
    scaled by 1 / sqrt(key_dim), softmax in float32), the memory projected once.

    Args:
        attention: The saved model's ``MultiHeadAttention`` (built; its attention
            dropout is 0, as :func:`keras_rnnlm.model.build_model` makes it).
        features: (batch, steps, units): the step's outputs of the last recurrent layer.
        keys, values: (batch, memory, heads, key_dim) and (batch, memory, heads,
            value_dim): the remembered outputs' projections.
        filled: bool (batch, memory): the slots that hold an output.
        valid: bool (batch, steps): the positions that hold a token; None: all.

    Returns:
        (the attention's output (batch, steps, units), the memory with the step's valid
        positions added and the oldest dropped: keys, values, filled).
    """
    steps, memory = ops.shape(features)[1], keys.shape[1]
    features = ops.copy(features)  # without the Keras mask it carries: valid says which positions count
    if valid is None:
        valid = ops.ones(ops.shape(features)[:2], "bool")
    keys = ops.concatenate([keys, ops.cast(attention.key_dense(features), keys.dtype)], axis=1)  # (batch, memory + steps, heads, key_dim)
    values = ops.concatenate([values, ops.cast(attention.value_dense(features), values.dtype)], axis=1)
    query = attention.query_dense(features) / ops.cast(ops.sqrt(float(attention.key_dim)), features.dtype)  # (batch, steps, heads, key_dim)
    scores = ops.einsum("bqhd,bkhd->bhqk", query, ops.cast(keys, features.dtype))  # (batch, heads, steps, memory + steps)
    allowed = memory_mask(steps, memory, filled, valid)  # (batch, steps, memory + steps)
    scores = ops.where(allowed[:, None], ops.cast(scores, "float32"), -1e9)
    weights = ops.cast(ops.softmax(scores, axis=-1), features.dtype)
    attended = attention.output_dense(ops.einsum("bhqk,bkhd->bqhd", weights, ops.cast(values, features.dtype)))
    filled = ops.concatenate([filled, valid], axis=1)
    return attended, keys[:, -memory:], values[:, -memory:], filled[:, -memory:]


class CarriedMemoryAttention(layers.Layer):
    """The saved model's attention block (``attention`` -> ``dropout`` -> residual add)
    reading, besides each step's positions, the last ``memory`` outputs of the steps
    before it, per lane (:func:`attend`: their keys and values), carried like a stateful
    recurrent layer's state: the gradient stops at the step's start, ``reset_states``
    empties every lane's memory.

    Args:
        attention: The saved model's ``MultiHeadAttention`` (its weights).
        dropout: The saved model's ``Dropout`` on the attention's output.
        memory: Outputs remembered per lane.
        lanes: Lanes read side by side (the batch size, fixed, as a stateful layer's).
    """

    def __init__(self, attention: layers.MultiHeadAttention, dropout: layers.Dropout, memory: int, lanes: int, **kwargs):
        super().__init__(name=f"{attention.name}_carried", dtype=attention.dtype_policy, **kwargs)
        self.attention, self.dropout, self.memory, self.lanes = attention, dropout, memory, lanes
        self.stateful = True  # found, backed up and reset with the recurrent layers (keras_rnnlm.backup)
        self.supports_masking = True

    def build(self, input_shape):
        keys_shape, values_shape = memory_shapes(self.attention, self.lanes, self.memory)
        self.keys = self.add_weight(shape=keys_shape, initializer="zeros", trainable=False, dtype=self.variable_dtype,
                                    name="memory_keys")
        self.values = self.add_weight(shape=values_shape, initializer="zeros", trainable=False, dtype=self.variable_dtype,
                                      name="memory_values")
        self.filled = self.add_weight(shape=(self.lanes, self.memory), initializer="zeros", trainable=False,
                                      dtype="float32", name="filled")  # 1 where a slot holds an output
        self.states = [self.keys, self.values, self.filled]

    def reset_states(self):
        for state in self.states:
            state.assign(ops.zeros_like(state))

    def call(self, features, mask=None, training=False):  # features: (lanes, steps, units)
        valid = None if mask is None else ops.cast(mask, "bool")
        attended, keys, values, filled = attend(self.attention, features, ops.stop_gradient(self.keys),
                                                ops.stop_gradient(self.values), ops.cast(self.filled, "bool"), valid)
        self.keys.assign(keys)
        self.values.assign(values)
        self.filled.assign(ops.cast(filled, "float32"))
        return features + self.dropout(attended, training=training)

    def compute_mask(self, features, mask=None):
        return mask


def attend_one(attention: layers.MultiHeadAttention, features, keys, values, filled):
    """One token's attention block in generation (:func:`attend` for a step of one,
    with the residual add): ``features`` (batch, units), the output of the token just
    read, attends to the memory and to itself.

    Returns:
        (the block's output (batch, units), the memory with this token added and the
        oldest dropped: keys, values, filled).
    """
    attended, keys, values, filled = attend(attention, features[:, None], keys, values, filled)
    return features + attended[:, 0], keys, values, filled
