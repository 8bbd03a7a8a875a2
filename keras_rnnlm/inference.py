"""The next token's logits from a trained model, computed fast for generation.

The generator calls the model once per generated token, on a small batch, so what costs
time is not arithmetic but the number of TensorFlow ops per step and every pass over the
(batch, vocabulary) output. Calling the Keras model as it is trained costs, per token, a
``tf.while_loop`` over the window inside the LSTM layer, the input projection of every
window position, a softmax and a log. :class:`NextTokenLogits` computes the same numbers
with fewer ops:

- The Embedding and the first LSTM layer's input kernel and bias are folded into one
  table (vocabulary, 4 * units), so a token's input projection is a gather.
- LSTM chains instead of windows. The model reads each window from zero state, so the
  window's LSTM steps cannot be carried over from one token to the next; but each
  window's first tokens were all read before. The generator keeps one LSTM chain per
  start position: ``window_size`` chains, started at each of the last ``window_size``
  tokens. A new token advances every chain at once (one matmul over all chains' rows),
  the oldest chain, which has read exactly the window, gives the logits, and a new
  chain starts. The arithmetic is the same as reading the window; the ops per token are
  one LSTM step's instead of ``window_size`` sequential ones.
- The output layer yields logits (no softmax, no log); its bias row is multiplied by a
  column of ones inside the one matmul, and banned ids get a bias of -inf, so neither
  adding the bias nor masking needs a pass of its own.
- The logits are padded with -inf to a whole number of :data:`BLOCK` columns, which is
  what the generator's two-level sampler reads.

A model of sequences (bptt mode) needs no chains: it carries each recurrent layer's
state from token to token, one step per token (for plain LSTMs the chains' arithmetic,
for other cells the layer's own Keras cell), from a prompt of any length (left-padded;
padding leaves the state as it is).

A window model that is not Embedding -> LSTM layers -> Dense softmax (a GRU, say) reads
the whole window through its own layers at every step; any other callable that returns
probabilities is read through a log. Tests hold every path equal to the Keras model's
probabilities.

How much this and the generator's other changes gained is measured by
``benchmarks/generate_speed.py`` and written down in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from keras_rnnlm.attention import attend_one, memory_shapes
from keras_rnnlm.runs import CacheSettings
from keras_rnnlm.sampling import BLOCK
from keras_rnnlm.speedups import lstm_cell
from keras_rnnlm.vocab import PAD_ID


class TokenSteps(NamedTuple):
    """The functions a generation loop calls. The state is a tuple of tensors (nested
    tuples for the LSTM chains) whose shapes stay the same from step to step.

    Attributes:
        start: int32 windows (batch, window_size) -> the state after reading them.
        logits: state -> float32 (batch, padded_size), the next token's logits; banned
            and padding ids are -inf.
        advance: (state, int32 ids (batch,)) -> the state after reading the ids.
        features: A model of sequences: state -> float32 (batch, units), what the output
            layer reads (the continuous cache remembers it); None for a window model.
    """

    start: Callable
    logits: Callable
    advance: Callable
    features: Callable | None = None


class NextTokenLogits:
    """Maps windows to the next token's logits.

    Args:
        model: A Keras model (or any callable) from int32 windows (batch, window_size) to
            probabilities (batch, vocabulary_size).
        vocabulary_size: Ids the model scores.
        banned_ids: Ids that must never be chosen (``<pad>``, ``<unk>``).
        attention_memory: A model with attention (bptt mode): outputs it remembers
            (``model.attention_memory``; :mod:`keras_rnnlm.attention`).

    Call :meth:`prepare` once inside a ``tf.function``, before the generation loop: it
    computes what every step shares and returns the step functions.
    """

    def __init__(self, model, vocabulary_size: int, banned_ids: Sequence[int], attention_memory: int = 0):
        self.model = model
        self.vocabulary_size = vocabulary_size
        self.padded_size = -(-vocabulary_size // BLOCK) * BLOCK
        self.banned_ids = list(banned_ids)
        self.attention_memory = attention_memory
        layers = _stack(model)
        if not attention_memory and any(isinstance(layer, keras.layers.MultiHeadAttention) for layer in layers):
            raise ValueError(f"{model.name} attends over a memory: pass its size (model.attention_memory)")
        head = _softmax_head_size(layers, vocabulary_size)
        self.body = layers[:-head] if head else []  # the layers up to the output Dense
        self.output_layer = layers[-head] if head else None
        # A model of sequences (bptt mode) predicts after every token of any length.
        self.sequences = bool(layers) and model.input_shape[1] is None
        self.lstm_layers = _lstm_stack(self.body, self.sequences) if head else None

    def prepare(self) -> TokenSteps:
        """Computes what every step shares (call it once inside a ``tf.function``, before
        the generation loop) and returns the step functions."""
        if self.output_layer is None:
            return _window_steps(self._logits_from_probabilities)
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

        def logits_from_features(hidden):  # (batch, units) -> (batch, padded_size)
            ones = tf.ones_like(hidden[:, :1])
            return tf.matmul(tf.concat([hidden, ones], axis=1), kernel_and_bias)

        if self.sequences:
            return self._carried_state_steps(logits_from_features, self._lstm_step() if self.lstm_layers else self._cell_step())
        if self.lstm_layers is not None:
            return self._lstm_chain_steps(logits_from_features)
        return _window_steps(lambda windows: logits_from_features(self._keras_features(windows)))

    def _keras_features(self, windows):
        hidden = windows
        for layer in self.body:
            hidden = layer(hidden, training=False)
        return tf.cast(hidden, tf.float32)

    def _lstm_chain_steps(self, logits_from_features) -> TokenSteps:
        """The chains of the module docstring. The state holds, for every LSTM layer, the
        hidden and cell states of ``window_size`` chains, youngest first:
        (window_size, batch, units) each."""
        table, weights, units = self._lstm_weights()

        def start(windows):
            window_size = windows.shape[1]
            zeros = tf.zeros([window_size, tf.shape(windows)[0], units])
            state = tuple((zeros, zeros) for _ in weights)
            for position in range(window_size):  # after window_size tokens every chain has started inside the window
                state = _lstm_advance(table, weights, state, windows[:, position], new_chain=True)
            return state

        return TokenSteps(start, lambda state: logits_from_features(state[-1][0][-1]),
                          lambda state, ids: _lstm_advance(table, weights, state, ids, new_chain=True))

    def _carried_state_steps(self, logits_from_features, step) -> TokenSteps:
        """One recurrent step per token, the state carried from the prompt's first token
        on: the context is unlimited. ``step`` is (initial state for a batch size,
        (state, ids) -> state); the top layer's state comes first in its tuple: its hidden
        state, the features."""
        initial_state, advance = step

        def start(prompts):  # (batch, length), left-padded with <pad>
            def read(position, state):
                ids = prompts[:, position]
                is_token = ids != PAD_ID  # padding leaves the state as it is

                def kept(new, old):  # (batch, ...) each
                    return tf.where(tf.reshape(is_token, [-1] + [1] * (new.shape.rank - 1)), new, old)

                return position + 1, tf.nest.map_structure(kept, advance(state, ids), state)

            state = initial_state(tf.shape(prompts)[0])
            _, state = tf.while_loop(lambda position, _: position < tf.shape(prompts)[1], read, (tf.constant(0), state))
            return state

        def features(state):
            return tf.cast(state[-1][0], tf.float32)

        return TokenSteps(start, lambda state: logits_from_features(features(state)), advance, features)

    def _lstm_step(self):
        """A plain LSTM stack's step, as the chains compute it (:func:`_lstm_advance`),
        one chain that never ends: (hidden, memory) per layer, (batch, units) each."""
        table, weights, units = self._lstm_weights()

        def initial_state(batch_size):
            zeros = tf.zeros([batch_size, units])
            return tuple((zeros, zeros) for _ in weights)

        return initial_state, lambda state, ids: _lstm_advance(table, weights, state, ids, new_chain=False)

    def _lstm_weights(self):
        """What an LSTM stack's step reads, outside the loop: the table (vocabulary,
        4 * units) of each id's input projection in the first LSTM layer (the Embedding
        folded into it), each layer's (kernel, bias, recurrent kernel), and the units."""
        embedding, first = self.lstm_layers[0], self.lstm_layers[1]
        table = tf.matmul(_weight(embedding.embeddings), _weight(first.cell.kernel)) + _weight(first.cell.bias)
        weights = [
            (_weight(layer.cell.kernel), _weight(layer.cell.bias), _weight(layer.cell.recurrent_kernel))
            for layer in self.lstm_layers[1:]
        ]
        return table, weights, first.cell.units  # every layer has the same units

    def _cell_step(self):
        """Any recurrent stack's step, through each layer's own Keras cell, the
        position-wise layers between them (layer normalization; dropout is off when
        generating) and the attention block, which reads a memory of the last
        ``attention_memory`` outputs and its own (:func:`~keras_rnnlm.attention.attend_one`).
        The state is each cell's and the attention's memory, then the features the output
        layer reads (the top of the stack), so the logits read ``state[-1][0]``."""
        embedding, *rest = [layer for layer in self.body if not isinstance(layer, (keras.layers.Dropout, keras.layers.Add))]
        # The attention block's residual add is attend_one's; its dropout is off.
        top = max(index for index, layer in enumerate(rest) if isinstance(layer, keras.layers.RNN))

        def run(inputs, states, start):  # rest[start:] on inputs (batch, features), each stateful layer taking its state
            new_states, states = [], iter(states)
            for layer in rest[start:]:
                if isinstance(layer, keras.layers.RNN):
                    inputs, cell_state = layer.cell(inputs, list(next(states)), training=False)
                    new_states.append(tuple(cell_state))
                elif isinstance(layer, keras.layers.MultiHeadAttention):
                    inputs, *memory = attend_one(layer, inputs, *next(states))
                    new_states.append(tuple(memory))
                else:
                    inputs = layer(inputs, training=False)
            return inputs, new_states

        def initial_state(batch_size):
            states = [
                tuple(layer.cell.get_initial_state(batch_size)) if isinstance(layer, keras.layers.RNN)
                else _empty_memory(layer, batch_size, self.attention_memory, rest[top].compute_dtype)
                for layer in rest if isinstance(layer, (keras.layers.RNN, keras.layers.MultiHeadAttention))
            ]
            cells = sum(isinstance(layer, keras.layers.RNN) for layer in rest)
            features, _ = run(states[cells - 1][0], states[cells:], top + 1)  # the top cell's output before any token
            return (*states, (features,))

        def advance(state, ids):  # ids: (batch,)
            # The embedding layer would attach its mask (a cell takes none): its rows instead.
            inputs = tf.cast(tf.gather(embedding.embeddings, ids), embedding.compute_dtype)  # (batch, embedding_dim)
            features, new_states = run(inputs, state[:-1], 0)
            return (*new_states, (features,))

        return initial_state, advance

    def _logits_from_probabilities(self, windows):
        probabilities = tf.cast(self.model(windows, training=False), tf.float32)  # (batch, vocabulary)
        banned = np.isin(np.arange(self.vocabulary_size), self.banned_ids)
        logits = tf.where(banned, -np.inf, tf.math.log(probabilities))
        return tf.pad(logits, [[0, 0], [0, self.padded_size - self.vocabulary_size]], constant_values=-np.inf)


def cached_steps(steps: TokenSteps, settings: CacheSettings) -> TokenSteps:
    """A bptt-mode model's generation steps (:class:`TokenSteps`) with the continuous
    cache (:mod:`keras_rnnlm.cache`) mixed into every next token's distribution, as
    :func:`keras_rnnlm.cache.cache_scores` scores a text: the last ``settings.size``
    states of what was read and written so far (the prompt first) each vote for the
    token that followed it. The logits are the mixture's log-probabilities; banned ids
    stay -inf. With ``lam`` 0, ``steps`` itself.

    The state is the model's, then the memory: the states (batch, size, units), the
    tokens that followed them (batch, size) and which slots hold one (batch, size),
    oldest first; and whether each row has read a token (the state before any has no
    token before it to remember).
    """
    if settings.lam == 0:
        return steps
    size, theta = settings.size, settings.theta
    log_lambda, log_rest = math.log(settings.lam), math.log1p(-settings.lam)

    def advance(state, ids):
        model_state, keys, followers, filled, started = state
        keys = tf.concat([keys[:, 1:], steps.features(model_state)[:, None]], axis=1)
        followers = tf.concat([followers[:, 1:], ids[:, None]], axis=1)
        filled = tf.concat([filled[:, 1:], started[:, None]], axis=1)
        return steps.advance(model_state, ids), keys, followers, filled, tf.ones_like(started)

    def start(prompts):  # (batch, length), left-padded: padding leaves the state as it is
        model_state = steps.start(prompts[:, :0])  # the state before any token
        batch, units = tf.shape(prompts)[0], steps.features(model_state).shape[-1]
        state = (model_state, tf.zeros([batch, size, units]), tf.zeros([batch, size], tf.int32),
                 tf.zeros([batch, size], tf.bool), tf.zeros([batch], tf.bool))

        def read(position, state):
            ids = prompts[:, position]
            is_token = ids != PAD_ID

            def kept(new, old):
                return tf.where(tf.reshape(is_token, [-1] + [1] * (new.shape.rank - 1)), new, old)

            return position + 1, tf.nest.map_structure(kept, advance(state, ids), state)

        _, state = tf.while_loop(lambda position, _: position < tf.shape(prompts)[1], read, (tf.constant(0), state))
        return state

    def logits(state):
        model_state, keys, followers, filled, _ = state
        model_logits = steps.logits(model_state)  # (batch, padded_size)
        scores = tf.where(filled, theta * tf.einsum("bu,bsu->bs", steps.features(model_state), keys), -math.inf)
        normalizer = tf.reduce_logsumexp(scores, axis=-1, keepdims=True)  # -inf: nothing remembered yet
        remembered = tf.math.is_finite(normalizer)
        votes = tf.exp(scores - tf.where(remembered, normalizer, 0.0))  # (batch, size), summing to 1
        rows = tf.broadcast_to(tf.range(tf.shape(followers)[0])[:, None], tf.shape(followers))
        cache = tf.scatter_nd(tf.stack([rows, followers], axis=-1), votes, tf.shape(model_logits))  # repeats add up
        mixed = tf.reduce_logsumexp(tf.stack([log_rest + tf.nn.log_softmax(model_logits),
                                              log_lambda + tf.math.log(cache)]), axis=0)
        mixed = tf.where(remembered, mixed, model_logits)
        return tf.where(tf.math.is_inf(model_logits), model_logits, mixed)  # banned ids and padding stay -inf

    return TokenSteps(start, logits, advance, steps.features)


def _empty_memory(attention: keras.layers.MultiHeadAttention, batch_size: int, size: int, dtype) -> tuple:
    """The attention memory of :func:`~keras_rnnlm.attention.attend_one`, nothing in it:
    keys, values, filled."""
    keys_shape, values_shape = memory_shapes(attention, batch_size, size)
    return tf.zeros(keys_shape, dtype), tf.zeros(values_shape, dtype), tf.zeros([batch_size, size], tf.bool)


def _window_steps(logits_from_windows) -> TokenSteps:
    """Steps whose state is the window itself: the model reads the whole window each step."""

    def advance(state, ids):
        (windows,) = state
        return (tf.concat([windows[:, 1:], ids[:, tf.newaxis]], axis=1),)  # (batch, window)

    return TokenSteps(lambda windows: (windows,), lambda state: logits_from_windows(state[0]), advance)


def _lstm_advance(table, weights, state, ids, new_chain: bool):
    """Reads one token into an LSTM stack, for every chain of ``state``.

    Args:
        table, weights: From :meth:`NextTokenLogits._lstm_weights`.
        state: (hidden, memory) per layer: (chains, batch, units) each, or (batch, units)
            for one chain.
        ids: int32 (batch,).
        new_chain: The oldest chain has read its window and ends, and a new one starts
            from zero state (no recurrent term, zero cell state): windows models. Else
            every chain goes on (the carried state of a bptt model).

    Returns:
        The new state, shaped as ``state``.
    """
    inputs, new_state = tf.gather(table, ids), []  # (batch, 4 * units): the same for every chain
    for number, ((kernel, bias, recurrent_kernel), (hidden, memory)) in enumerate(zip(weights, state)):
        if number > 0:  # the input is the layer below's new hidden state, chain by chain
            inputs = _matmul(new_state[-1][0], kernel) + bias
        if new_chain:
            recurrent = tf.pad(_matmul(hidden[:-1], recurrent_kernel), [[1, 0], [0, 0], [0, 0]])  # (chains, batch, 4 * units)
            memory = tf.pad(memory[:-1], [[1, 0], [0, 0], [0, 0]])
        else:
            recurrent = _matmul(hidden, recurrent_kernel)
        new_state.append(lstm_cell(inputs + recurrent, memory))
    return tuple(new_state)


def _matmul(values, kernel):
    """(batch, n) @ (n, m), or (chains, batch, n) @ (n, m) -> (chains, batch, m) as one 2-D matmul."""
    if values.shape.rank == 2:
        return tf.matmul(values, kernel)
    shape = tf.shape(values)
    return tf.reshape(tf.matmul(tf.reshape(values, [-1, shape[2]]), kernel), [shape[0], shape[1], kernel.shape[1]])


def _weight(variable):
    return tf.cast(variable, tf.float32)


def _stack(model) -> list:
    """The layers of a model :func:`keras_rnnlm.model.build_model` built: a
    ``keras.Sequential``'s, or, with attention, the functional model's after its input;
    [] for anything else (read through its probabilities)."""
    if isinstance(model, keras.Sequential):
        return model.layers
    if isinstance(model, keras.Model) and any(isinstance(layer, keras.layers.MultiHeadAttention) for layer in model.layers):
        return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    return []


def _softmax_head_size(layers, vocabulary_size: int) -> int:
    """How many final layers form the output Dense (with a bias) and its softmax: 2 for
    Dense -> Activation("softmax"), 1 for a Dense with a softmax activation (models
    saved before the two were split), 0 for anything else."""

    def dense(layer, activation):
        return (
            isinstance(layer, keras.layers.Dense)
            and layer.activation is activation
            and layer.use_bias
            and layer.units == vocabulary_size
        )

    if len(layers) >= 2 and isinstance(layers[-1], keras.layers.Activation) and layers[-1].activation is keras.activations.softmax:
        return 2 if dense(layers[-2], keras.activations.linear) else 0
    return 1 if layers and dense(layers[-1], keras.activations.softmax) else 0


def _lstm_stack(layers, sequences: bool) -> list | None:
    """[embedding, lstm, lstm, ...] when the layers are an Embedding, then plain LSTM
    layers (dropout between them is inactive when generating); else None. A window model's
    top layer returns only its last output; a sequence model's layers all return sequences
    and its Embedding masks the padding."""
    layers = [layer for layer in layers if not isinstance(layer, keras.layers.Dropout)]
    if not layers or not isinstance(layers[0], keras.layers.Embedding) or layers[0].mask_zero != sequences:
        return None
    lstms = layers[1:]
    plain = all(
        type(layer) is keras.layers.LSTM
        and layer.cell.activation is keras.activations.tanh
        and layer.cell.recurrent_activation is keras.activations.sigmoid
        and layer.cell.use_bias
        and not layer.go_backwards
        and not layer.stateful
        and layer.return_sequences == (sequences or number < len(lstms) - 1)
        for number, layer in enumerate(lstms)
    )
    return [layers[0], *lstms] if lstms and plain else None
