"""Every speed path equals the stock Keras piece it replaces."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rnnlm import speedups
from keras_rnnlm.config import ModelConfig, TrainConfig
from keras_rnnlm.model import build_model, compile_model, training_model
from keras_rnnlm.speedups import (
    NextTokenCrossEntropy,
    WindowLSTM,
    takes_window_path,
)


def built_under(policy, build):
    keras.mixed_precision.set_global_policy(policy)
    try:
        return build()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_the_window_path_is_chosen_for_unrolled_16_bit_lstm_layers_only():
    def lstm(policy="mixed_bfloat16", **settings):
        layer = built_under(policy, lambda: keras.layers.LSTM(4, **{"unroll": True, **settings}))
        layer.build((None, 3, 2))
        return layer

    assert takes_window_path(lstm())
    assert takes_window_path(lstm("mixed_float16"))
    assert not takes_window_path(lstm("float32"))  # measured no faster there
    assert not takes_window_path(lstm(unroll=False))  # a GPU's cuDNN kernel
    assert not takes_window_path(lstm(recurrent_dropout=0.1))
    assert not takes_window_path(lstm(go_backwards=True))
    assert not takes_window_path(built_under("mixed_bfloat16", lambda: keras.layers.GRU(4, unroll=True)))


@pytest.mark.parametrize("policy, tolerance", [("float32", 1e-5), ("mixed_bfloat16", 3e-2)])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_window_lstm_computes_keras_lstm(policy, tolerance, return_sequences, monkeypatch):
    cells, lstm_cell = [], speedups.lstm_cell  # the window path's cell calls: one per position

    def counted_cell(*args):
        cells.append(args)
        return lstm_cell(*args)

    monkeypatch.setattr(speedups, "lstm_cell", counted_cell)
    lstm = built_under(policy, lambda: keras.layers.LSTM(16, unroll=True, return_sequences=return_sequences))
    inputs = tf.constant(np.random.default_rng(0).normal(size=(8, 5, 12)), tf.float32)
    lstm.build(inputs.shape)
    for weight in lstm.weights:  # larger than initial weights, and a bias, so every gate matters
        weight.assign(weight + np.random.default_rng(1).normal(0, 0.3, weight.shape))
    window_lstm = WindowLSTM(lstm)
    assert window_lstm.weights == lstm.weights  # the LSTM's own variables
    results = []
    for layer in (window_lstm, lstm):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = tf.cast(layer(inputs, training=True), tf.float32)
            value = tf.reduce_sum(outputs * tf.range(outputs.shape[-1], dtype=tf.float32))
        results.append([outputs, *tape.gradient(value, [inputs, *lstm.trainable_weights])])
    assert len(cells) == 5
    for ours, keras_result in zip(*results, strict=True):
        scale = float(tf.reduce_max(tf.abs(keras_result)))
        np.testing.assert_allclose(np.asarray(ours), np.asarray(keras_result), atol=tolerance * scale)


@pytest.mark.parametrize("policy, tolerance", [("float32", 1e-6), ("mixed_bfloat16", 1e-2)])
def test_the_training_model_shares_the_weights_and_computes_the_same_probabilities(policy, tolerance):
    model = built_under(policy, lambda: build_model(ModelConfig(embedding_dim=8, units=16, layers=2), 5, 40, unroll=True))
    compile_model(model, TrainConfig())
    trainer = built_under(policy, lambda: training_model(model, TrainConfig()))
    window_path = [type(layer) for layer in trainer.layers].count(WindowLSTM)
    assert window_path == (2 if policy == "mixed_bfloat16" else 0)
    assert {id(weight) for weight in trainer.weights} == {id(weight) for weight in model.weights}
    windows = np.random.default_rng(0).integers(0, 40, (16, 5)).astype(np.int32)
    logits = trainer(windows)
    assert logits.dtype == "float32"
    np.testing.assert_allclose(tf.nn.softmax(logits), model(windows), atol=tolerance)

    before = model.predict(windows, verbose=0)
    trainer.fit(windows, np.arange(16) % 40, epochs=2, verbose=0)
    assert not np.allclose(model.predict(windows, verbose=0), before)  # training the trainer trains the model


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_next_token_loss_and_its_gradient_equal_keras_sparse_cross_entropy_from_logits(dtype):
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(0, 3, (32, 50)), dtype)
    targets = tf.constant(rng.integers(0, 50, 32), tf.int32)
    weights = tf.constant(rng.uniform(0, 2, 32), tf.float32)
    results = []
    for loss in (NextTokenCrossEntropy(), keras.losses.SparseCategoricalCrossentropy(from_logits=True)):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            value = loss(targets, tf.cast(logits, tf.float32) if dtype == "float32" else logits, sample_weight=weights)
        results.append([value, tape.gradient(value, logits)])
    for ours, theirs in zip(*results, strict=True):
        np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(theirs, np.float32), rtol=1e-4, atol=1e-6)


def test_next_token_loss_stays_finite_when_the_target_probability_underflows():
    logits = tf.constant([[0.0, 200.0, 0.0]])  # the target (id 0) trails by 200 nats
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = NextTokenCrossEntropy()(tf.constant([0]), logits)
    np.testing.assert_allclose(loss, -np.log(np.finfo(np.float32).tiny), rtol=1e-6)  # 87.3, not inf
    np.testing.assert_allclose(tape.gradient(loss, logits), [[-1.0, 1.0, 0.0]], atol=1e-6)  # softmax - one-hot


