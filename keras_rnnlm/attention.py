"""Attention over a carried memory (issue 28): one stock ``MultiHeadAttention`` after the
last recurrent layer, reading the current tokens' outputs and a memory of the outputs
before them, carried from step to step with the gradient stopped (as Transformer-XL
carries its segments and SHA-RNN its memory; Merity 2019).

The saved model holds the block in stock layers: ``MultiHeadAttention`` over the text it
is given, causally, then ``Dropout`` and a residual ``Add``. What reads a text in order
(bptt training, ``evaluate``, the cache) reads it in steps, so there the same layers sit
in :class:`CarriedMemoryAttention`, which keeps the last ``memory`` outputs of each lane
between steps, as a stateful LSTM keeps its state: a step attends to them and to its own
positions up to each query. Generation reads one token a step (:func:`attend_one`).
``tests/test_attention.py`` holds all three equal.
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


class CarriedMemoryAttention(layers.Layer):
    """The saved model's attention block (``attention`` -> ``dropout`` -> residual add)
    reading, besides each step's positions, the last ``memory`` outputs of the steps
    before it, per lane, carried like a stateful recurrent layer's state: the gradient
    stops at the step's start, ``reset_states`` empties every lane's memory.

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
        units = input_shape[-1]
        self.kept = self.add_weight(shape=(self.lanes, self.memory, units), initializer="zeros", trainable=False,
                                    dtype=self.variable_dtype, name="memory")  # (lanes, memory, units)
        self.filled = self.add_weight(shape=(self.lanes, self.memory), initializer="zeros", trainable=False,
                                      dtype="float32", name="filled")  # 1 where a slot holds an output
        self.states = [self.kept, self.filled]

    def reset_states(self):
        for state in self.states:
            state.assign(ops.zeros_like(state))

    def call(self, features, mask=None, training=False):  # features: (lanes, steps, units)
        steps = ops.shape(features)[1]
        valid = ops.ones(ops.shape(features)[:2], "bool") if mask is None else ops.cast(mask, "bool")
        remembered = ops.stop_gradient(ops.cast(self.kept, features.dtype))
        keys = ops.concatenate([remembered, features], axis=1)  # (lanes, memory + steps, units)
        allowed = memory_mask(steps, self.memory, ops.cast(self.filled, "bool"), valid)
        attended = self.attention(features, keys, attention_mask=allowed, training=training)
        self.kept.assign(ops.cast(keys[:, -self.memory:], self.kept.dtype))
        filled = ops.concatenate([ops.cast(self.filled, "bool"), valid], axis=1)
        self.filled.assign(ops.cast(filled[:, -self.memory:], "float32"))
        return features + self.dropout(attended, training=training)

    def compute_mask(self, features, mask=None):
        return mask


def attend_one(attention: layers.MultiHeadAttention, features, keys, values, filled):
    """One token's attention block in generation: ``features`` (batch, units), the output
    of the token just read, attends to the memory and to itself.

    The memory keeps each remembered output's key and value projections, (batch, memory,
    heads, key_dim) and (batch, memory, heads, value_dim), with ``filled`` (batch, memory)
    bool: a token projects only itself, where calling the layer would project the whole
    memory again at every token. The arithmetic is the layer's own (its public
    ``query_dense``, ``key_dense``, ``value_dense`` and ``output_dense``, the scores scaled
    by 1 / sqrt(key_dim)); a test holds the two equal.

    Returns:
        (the block's output (batch, units), the memory with this token added and the
        oldest dropped: keys, values, filled).
    """
    query = features[:, None]  # (batch, 1, units)
    keys = ops.concatenate([keys, ops.cast(attention.key_dense(query), keys.dtype)], axis=1)  # (batch, memory + 1, heads, key_dim)
    values = ops.concatenate([values, ops.cast(attention.value_dense(query), values.dtype)], axis=1)
    projected = attention.query_dense(query) / ops.cast(ops.sqrt(float(attention.key_dim)), features.dtype)  # (batch, 1, heads, key_dim)
    scores = ops.einsum("bqhd,bkhd->bhqk", projected, ops.cast(keys, features.dtype))  # (batch, heads, 1, memory + 1)
    allowed = ops.concatenate([filled, ops.ones_like(filled[:, :1])], axis=1)  # (batch, memory + 1)
    scores = ops.where(allowed[:, None, None, :], ops.cast(scores, "float32"), -1e9)
    weights = ops.cast(ops.softmax(scores, axis=-1), features.dtype)
    attended = attention.output_dense(ops.einsum("bhqk,bkhd->bqhd", weights, ops.cast(values, features.dtype)))
    return features + attended[:, 0], keys[:, 1:], values[:, 1:], allowed[:, 1:]
