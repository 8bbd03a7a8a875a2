"""The language model: Embedding -> recurrent layers [-> LayerNormalization] -> Dropout -> Dense -> softmax.

:func:`build_model` builds the model ``model.keras`` holds: stock Keras layers in a
``keras.Sequential``, compiled by :func:`compile_model` with stock Keras loss, optimizer
and metrics, so that Keras alone loads it (``keras.saving.load_model``) and can predict
with it or train it further.

:func:`training_model` builds what trains it: the same layer objects (so the same
weights), ending in the logits instead of the softmax, with the recurrent layers
carrying their state from batch to batch in bptt mode, the output layer reading the
embedding matrix when the embeddings are tied, and the measured speed paths of
:mod:`keras_rnnlm.speedups` swapped in.

The defaults keep the recurrent layers eligible for the fused cuDNN kernel on a GPU
(default activations, no recurrent dropout); a config that loses it gets a warning.
"""

from __future__ import annotations

import logging
import zipfile

import keras
import numpy as np
from keras import layers

from keras_rnnlm import regularization, speedups
from keras_rnnlm.attention import CarriedMemoryAttention
from keras_rnnlm.config import ModelConfig, TrainConfig
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.keras_private import FitAcrossWorkers
from keras_rnnlm.optimizers import stock_optimizer, training_optimizer
from keras_rnnlm.sampled_softmax import SampledSoftmaxTrainer
from keras_rnnlm.vocab import UNK_ID

logger = logging.getLogger("keras_rnnlm")

CELLS = {"lstm": layers.LSTM, "gru": layers.GRU, "simple_rnn": layers.SimpleRNN}


def build_model(
    config: ModelConfig, window_size: int | None, vocabulary_size: int, unroll: bool = False
) -> keras.Sequential:
    """Builds the (uncompiled) model.

    Args:
        config: Sizes, cell and dropout.
        window_size: Tokens of context per example (windows mode); None for a model that
            reads sequences of any length and predicts after every token (bptt mode).
        vocabulary_size: Number of token ids, reserved tokens included.
        unroll: Unroll the recurrent layers over the window (windows mode). Faster on a
            CPU for short windows (no ``tf.while_loop``), but a GPU then loses the cuDNN
            kernel, so training turns it on for the CPU only. Defaults to False.

    Returns:
        A ``keras.Sequential`` mapping int32 windows (batch, window_size) to next-token
        probabilities (batch, vocabulary_size); or, with ``window_size`` None, int32
        sequences (batch, time), left-padded with 0, to probabilities after every
        token (batch, time, vocabulary_size). Probabilities are always float32.
    """
    if config.cell == "simple_rnn" or config.recurrent_dropout > 0:
        logger.warning(
            "warning: model.cell = %r with recurrent_dropout = %s cannot use the fused cuDNN kernel; "
            "on a GPU this model trains several times slower than the default LSTM",
            config.cell,
            config.recurrent_dropout,
        )
    sequences = window_size is None
    stack = [
        keras.Input((window_size,), dtype="int32"),
        # Sequences are left-padded with <pad> (id 0) to a common length; the mask keeps
        # the recurrent state unchanged over the padding.
        layers.Embedding(vocabulary_size, config.embedding_dim, mask_zero=sequences, name="embedding"),  # (batch, time, embedding_dim)
    ]

    def locked(features: int) -> tuple | None:
        """With locked dropout, one mask a sequence: the same at every position."""
        return (None, 1, features) if config.locked_dropout else None

    if config.embedding_dropout:
        stack.append(layers.Dropout(config.embedding_dropout, noise_shape=locked(config.embedding_dim), name="embedding_dropout"))
    for number in range(config.layers):
        # (batch, time, units) between layers and for sequences; (batch, units) at the top of a window model
        return_sequences = sequences or number < config.layers - 1
        stack.append(
            CELLS[config.cell](
                config.units,
                return_sequences=return_sequences,
                recurrent_dropout=config.recurrent_dropout,
                unroll=unroll and not sequences,
                name=f"{config.cell}_{number + 1}",
            )
        )
        if config.layer_norm:
            stack.append(layers.LayerNormalization(name=f"layer_norm_{number + 1}"))
        noise_shape = locked(config.units) if return_sequences else None
        stack.append(layers.Dropout(config.dropout, noise_shape=noise_shape, name=f"dropout_{number + 1}"))
    # The output matmul runs at the compute precision (the largest in the model); the
    # softmax runs in float32, as small probabilities underflow in 16 bits.
    head = [
        layers.Dense(vocabulary_size, name="next_token"),  # (batch, [time,] vocabulary): logits
        layers.Activation("softmax", dtype="float32", name="probabilities"),
    ]
    if not config.attention:
        return keras.Sequential(stack + head, name="rnnlm")
    # The attention block needs two inputs (a residual add): a functional model of the
    # same stock layers. Over the text it is given it attends causally to every position;
    # reading in steps, to a memory of the last attention_memory (keras_rnnlm.attention).
    features = stack[0]
    for layer in stack[1:]:
        features = layer(features)  # (batch, time, units)
    attention = layers.MultiHeadAttention(config.attention_heads, key_dim=config.units // config.attention_heads, name="attention")
    attended = attention(features, features, use_causal_mask=True)
    attended = layers.Dropout(config.dropout, name="attention_dropout")(attended)
    outputs = layers.Add(name="attention_residual")([features, attended])
    for layer in head:
        outputs = layer(outputs)
    return keras.Model(stack[0], outputs, name="rnnlm")


def with_vocabulary(model: keras.Model, config: ModelConfig, window_size: int | None, vocabulary_size: int) -> keras.Model:
    """A trained ``model`` (built from ``config``) for a larger vocabulary whose first ids
    are its own, as a fine-tune on new text extends it: every weight kept, and each added
    token given ``<unk>``'s embedding row (the model read these words as ``<unk>``) and
    output column, with ``<unk>``'s bias lowered by log(added + 1) for it and for each
    of them: at the start the model predicts what it did, ``<unk>``'s probability shared
    evenly among ``<unk>`` and the added tokens.

    Returns:
        A new model, uncompiled; ``model`` is unchanged.
    """
    grown = build_model(config, window_size, vocabulary_size)
    added = vocabulary_size - model.get_layer("embedding").input_dim
    share = np.log(added + 1.0)
    for new in grown.layers:
        if not new.weights:
            continue  # dropout, whose rate the fine-tune may change: the layers are matched by name
        old = model.get_layer(new.name)
        weights = old.get_weights()
        if isinstance(old, layers.Embedding):
            weights = [np.concatenate([weights[0], np.repeat(weights[0][UNK_ID:UNK_ID + 1], added, axis=0)])]
        elif old.name == "next_token":
            kernel, bias = weights
            bias = bias.copy()
            bias[UNK_ID] -= share
            weights = [np.concatenate([kernel, np.repeat(kernel[:, UNK_ID:UNK_ID + 1], added, axis=1)], axis=1),
                       np.concatenate([bias, np.full(added, bias[UNK_ID], bias.dtype)])]
        new.set_weights(weights)
    return grown


def load_model(path) -> keras.Sequential:
    """Loads a saved ``model.keras`` in Keras' safe mode (no code runs from the file),
    without its training settings: generating needs none. A model saved by keras_rnnlm
    0.1.0, whose LSTM layers were its own ``WindowLSTM`` subclass, loads as stock Keras.

    Raises:
        RnnlmError: The file is not a readable Keras model (cut off, edited).
    """
    fix = "train the run again with --overwrite, or restore the file"
    if not zipfile.is_zipfile(path):  # Keras would say "File not found", though the file is there
        raise RnnlmError(f"{path} is damaged: it is not a whole .keras archive (cut off or overwritten); {fix}")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True, custom_objects={"keras_rnnlm>WindowLSTM": _SavedWindowLSTM})
    except (ValueError, OSError, KeyError, TypeError, zipfile.BadZipFile) as error:  # what Keras raises for a damaged file
        reason = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        raise RnnlmError(f"{path} is damaged and cannot be read as a Keras model ({reason}); {fix}") from None
    if any(isinstance(layer, _SavedWindowLSTM) for layer in model.layers):
        model = _with_stock_lstm_layers(model)
    return model


class _SavedWindowLSTM(layers.LSTM):
    """Reads the LSTM layers that keras_rnnlm 0.1.0 saved as its ``WindowLSTM``: a
    ``keras.layers.LSTM`` subclass with the same config and weights, whose weights the
    file keeps under that class name."""


_SavedWindowLSTM.__name__ = "WindowLSTM"  # the name the file keeps the weights under


def _with_stock_lstm_layers(model: keras.Sequential) -> keras.Sequential:
    """The same model and weights, each 0.1.0 ``WindowLSTM`` a ``keras.layers.LSTM``."""

    def stock(layer):
        kind = layers.LSTM if isinstance(layer, _SavedWindowLSTM) else type(layer)
        return kind.from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=stock)
    clone.set_weights(model.get_weights())
    return clone


def compile_model(model: keras.Model, config: TrainConfig) -> None:
    """Compiles with stock Keras pieces, as ``model.keras`` keeps them: sparse categorical
    cross-entropy (integer targets: no one-hot vector is ever built), Adam or SGD with
    clipping by global norm, accuracy and top-5 accuracy. The optimizer is built, so its
    state can be saved with the model.
    """
    model.compile(optimizer=stock_optimizer(config), loss=keras.losses.SparseCategoricalCrossentropy(), weighted_metrics=make_metrics())
    model.optimizer.build(model.trainable_variables)


def training_model(
    model: keras.Sequential, config: TrainConfig, lanes: int | None = None, bptt_steps: int | None = None,
    tie_embeddings: bool = False, sampled_candidates: int = 0, seed: int = 0, regularize: ModelConfig | None = None,
    attention_memory: int = 0,
) -> keras.Model:
    """The model that trains ``model``'s weights, compiled for training.

    Args:
        model: Built by :func:`build_model`.
        config: Optimizer, learning rate and clipping.
        lanes: Bptt mode: the batch's lanes. The recurrent layers then carry their state
            from one batch to the next (:func:`carried_state_model`), so the model takes
            batches of exactly (lanes, bptt_steps); ``reset_states`` starts every lane afresh.
        bptt_steps: Bptt mode: tokens each lane reads per batch.
        tie_embeddings: The output layer multiplies by the embedding matrix, transposed,
            instead of the Dense layer's kernel (:class:`RowsOutput`); the Dense layer's
            bias stays. :func:`copy_output_rows` copies the embeddings into the saved
            model's kernel.
        sampled_candidates: Above 0, training steps compute the sampled softmax over the
            targets and this many sampled tokens (:mod:`keras_rnnlm.sampled_softmax`);
            every other call, the full one. The output kernel then trains as a
            (vocabulary, units) matrix of its own, one row a token (:class:`RowsOutput`,
            copied into the saved model's kernel by :func:`copy_output_rows`), and Adam
            reads and writes only the rows a step touched (:class:`~keras_rnnlm.optimizers.SparseRowsAdam`).
        seed: The run's seed, which draws the sampled tokens and the regularization's masks.
        regularize: The model config whose training-only regularization to apply
            (weight drop, word dropout, AR and TAR: :mod:`keras_rnnlm.regularization`);
            None applies none.
        attention_memory: A model with attention: outputs each lane remembers
            (``model.attention_memory``; :mod:`keras_rnnlm.attention`).

    Returns:
        A model of ``model``'s layers (the same variables: training it trains ``model``)
        without the final softmax, outputting float32 logits, compiled: a
        :class:`TrainingModel`, or with ``sampled_candidates`` a
        :class:`~keras_rnnlm.sampled_softmax.SampledSoftmaxTrainer`. This is where the
        speed paths of :mod:`keras_rnnlm.speedups` are chosen, each beside the stock
        Keras piece it replaces.
    """
    inputs, body, dense = _parts(model, lanes, bptt_steps, attention_memory)
    if regularize is not None:
        body = regularized(body, regularize, stateful=lanes is not None, seed=seed)
    if tie_embeddings:
        output = RowsOutput(dense, rows=body[0].embeddings)
    elif sampled_candidates:  # a step reads and updates some rows, never the whole (units, vocabulary) kernel
        output = RowsOutput(dense)
    else:
        output = dense
    if sampled_candidates:
        trainer = SampledSoftmaxTrainer(keras.Sequential([inputs, *body], name="features"), output, _logits(),
                                        sampled_candidates, seed, name=f"{model.name}_training")
    else:
        trainer = TrainingModel([inputs, *body, output, _logits()], name=f"{model.name}_training")
    trainer.compile(
        # stock: keras.optimizers.Adam or SGD (stock_optimizer)
        optimizer=training_optimizer(config, sparse_rows=bool(sampled_candidates)),
        # stock: SparseCategoricalCrossentropy(from_logits=True); averaged over the
        # targets' weights, so padding (weight 0) counts for nothing
        loss=speedups.NextTokenCrossEntropy(reduction="mean_with_sample_weight"),
        weighted_metrics=make_metrics(),
    )
    return trainer


def carried_state_model(model: keras.Model, lanes: int, bptt_steps: int, attention_memory: int = 0) -> keras.Sequential:
    """``model``'s layers (the same variables) reading ``lanes`` lanes of ``bptt_steps``
    tokens a call, each recurrent layer carrying its state from one call to the next
    (``stateful``), and the attention block, if any, its memory of ``attention_memory``
    outputs, to float32 logits: how a bptt-mode model reads a text in order.
    Uncompiled; ``reset_states`` starts every lane afresh."""
    inputs, body, dense = _parts(model, lanes, bptt_steps, attention_memory)
    return keras.Sequential([inputs, *body, dense, _logits()], name=f"{model.name}_lanes")


def carried_state_features(model: keras.Model, lanes: int, bptt_steps: int, attention_memory: int = 0) -> keras.Model:
    """:func:`carried_state_model` with two outputs: the features the output layer reads
    (the last recurrent layer's output or the attention block's, at the compute
    precision) and the logits."""
    inputs, body, dense = _parts(model, lanes, bptt_steps, attention_memory)
    features = inputs
    for layer in body:
        features = layer(features)
    return keras.Model(inputs, [features, _logits()(dense(features))], name=f"{model.name}_lanes_features")


def regularized(body: list[layers.Layer], config: ModelConfig, stateful: bool, seed: int) -> list[layers.Layer]:
    """The training model's body (from :func:`_parts`) with the training-only
    regularization ``config`` asks for (:mod:`keras_rnnlm.regularization`): the
    embedding dropping word types, each LSTM's recurrent kernel weight-dropped (in place
    of a speed path: stock Keras' LSTM step, with the dropped kernel), and the penalties
    on the top layer's output around its dropout (TAR before it, AR after it; after its
    layer normalization, if any)."""
    recurrent = [index for index, layer in enumerate(body) if isinstance(layer, (keras.layers.RNN, speedups.WindowLSTM))]
    top_dropout = next(index for index in range(recurrent[-1], len(body)) if isinstance(body[index], layers.Dropout))
    stack = []
    for index, layer in enumerate(body):
        if isinstance(layer, layers.Embedding) and config.word_dropout:
            layer = regularization.WordDroppedEmbedding(layer, config.word_dropout, seed=seed + index)
        elif index in recurrent and config.weight_dropout:
            stock = layer.lstm if isinstance(layer, speedups.WindowLSTM) else layer
            layer = regularization.weight_dropped(stock, config.weight_dropout, seed=seed + index, stateful=stateful)
        stack.append(layer)
    tar = [regularization.ActivationPenalty(beta=config.temporal_activation_regularization, name="tar")
           ] if config.temporal_activation_regularization else []
    ar = [regularization.ActivationPenalty(alpha=config.activation_regularization, name="ar")] if config.activation_regularization else []
    return stack[:top_dropout] + tar + [stack[top_dropout]] + ar + stack[top_dropout + 1:]


class TrainingModel(FitAcrossWorkers, keras.Sequential):
    """A ``keras.Sequential`` whose ``fit`` also runs across workers
    (:class:`~keras_rnnlm.keras_private.FitAcrossWorkers`)."""


def _parts(model: keras.Model, lanes: int | None, bptt_steps: int | None, memory: int = 0):
    """The input, the body (every layer up to the output ``Dense``) and the output
    ``Dense`` of a training model of ``model``: in lanes, the recurrent layers' cells in
    layers that keep their state, and the attention block reading a memory of the last
    ``memory`` outputs (``model.attention_memory``); else, the speed paths swapped in."""
    *body, dense, softmax = [layer for layer in model.layers if not isinstance(layer, layers.InputLayer)]
    if not (isinstance(softmax, layers.Activation) and isinstance(dense, layers.Dense)):
        raise ValueError(f"{model.name} does not end in a Dense layer and a softmax; build it with build_model")
    block = []
    if isinstance(body[-1], layers.Add):  # the attention block: attention, its dropout, the residual add
        *body, attention, attention_dropout, _ = body
        if lanes is None or not memory:
            raise ValueError(f"{model.name} attends over a memory: read it in lanes, with the memory's size")
        block = [CarriedMemoryAttention(attention, attention_dropout, memory, lanes)]
    stack = []
    for layer in body:
        if lanes is not None and isinstance(layer, keras.layers.RNN):
            # The stock layer's cell (its weights), in a layer that keeps its state.
            layer = keras.layers.RNN(layer.cell, return_sequences=True, stateful=True, name=f"{layer.name}_carried")
        elif speedups.takes_window_path(layer):
            layer = speedups.WindowLSTM(layer)  # stock: the LSTM layer itself
        stack.append(layer)
    stack += block
    if lanes is None:
        inputs = keras.Input(model.input_shape[1:], dtype="int32")
    else:
        inputs = keras.Input(batch_shape=(lanes, bptt_steps), dtype="int32")
    return inputs, stack, dense


def _logits() -> layers.Layer:
    """The logits in float32, where the softmax runs: the loss and metrics read them."""
    return layers.Activation("linear", dtype="float32", name="logits")  # (batch, [time,] vocabulary)


class RowsOutput(layers.Layer):
    """The output layer with its kernel one row a token: ``features @ rows.T + bias``.

    With tied embeddings the rows are the embedding matrix, used twice (Press & Wolf
    2017). With sampled softmax they are a matrix of their own, started from the Dense
    kernel, transposed: a sampled step then reads and updates the rows of its targets and
    candidates (a sparse gradient), where the Dense kernel's layout would make its
    gradient a whole dense matrix.

    Args:
        dense: The model's output ``Dense`` layer; its bias is the bias. Its kernel is not
            used (:func:`copy_output_rows` sets it from the rows, for the saved model).
        rows: The (vocabulary, units) matrix to use: the embedding matrix; None makes one.
    """

    def __init__(self, dense: layers.Dense, rows=None, **kwargs):
        super().__init__(name="output_rows", dtype=dense.dtype_policy, **kwargs)
        self.supports_masking = True  # as Dense: the mask passes through
        if rows is None:
            rows = self.add_weight(shape=tuple(reversed(dense.kernel.shape)), initializer="zeros", name="rows")
            rows.assign(keras.ops.transpose(dense.kernel))
        self.rows = rows  # a tracked variable, shared when it is the embeddings'
        self.bias = dense.bias

    def call(self, features):
        rows = keras.ops.cast(self.rows, self.compute_dtype)
        return keras.ops.matmul(features, keras.ops.transpose(rows)) + keras.ops.cast(self.bias, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.rows.shape[0])


def output_rows(trainer: keras.Model):
    """The (vocabulary, units) matrix the training model's output reads, if it reads one
    (tied embeddings, sampled softmax), else None."""
    found = [layer.rows for layer in trainer.layers if isinstance(layer, RowsOutput)]
    return found[0] if found else None


def copy_output_rows(model: keras.Sequential, rows) -> None:
    """Sets the saved model's output kernel to ``rows``, transposed: what a model trained
    with :class:`RowsOutput` computes, in stock layers."""
    model.layers[-2].kernel.assign(keras.ops.transpose(rows))


def make_metrics() -> list[keras.metrics.Metric]:
    """Accuracy and top-5 accuracy of the next token, to compile as ``weighted_metrics``
    (Keras' ``metrics`` ignore sample weights, which mark padding in bptt mode).
    Perplexity, exp of the mean cross-entropy, is the loss's
    (:class:`keras_rnnlm.callbacks.Perplexity`).

    Accuracy is top-1 accuracy: ``in_top_k`` is one pass over the (batch, vocabulary)
    output, where ``SparseCategoricalAccuracy``'s argmax took several times as long on a
    CPU (``benchmarks/train_breakdown.py``). A target tied with the best counts as right.
    """
    return [
        keras.metrics.SparseTopKCategoricalAccuracy(k=1, name="accuracy"),
        keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy"),
    ]
