"""Every speed path equals the stock Keras piece it replaces."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rnnlm import speedups
from keras_rnnlm.config import ModelConfig, TrainConfig
from keras_rnnlm.model import build_model, compile_model, training_model
from keras_rnnlm.speedups import (
    FusedAdam,
    NextTokenCrossEntropy,
    WindowLSTM,
    adam_moments,
    copy_optimizer_state,
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


def adam_steps(optimizer, start, gradients):
    weights = [keras.Variable(value) for value in start]
    for step in gradients:
        optimizer.apply(step, weights)
    return weights


def sparse_and_dense_gradients(steps=5):
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(8,)).astype(np.float32)]
    gradients = [
        [tf.IndexedSlices(tf.constant(rng.normal(size=(3, 8)), tf.float32), tf.constant([4, 9, 7]), tf.constant([50, 8])),
         tf.constant(rng.normal(size=(8,)), tf.float32)]
        for _ in range(steps)
    ]  # an Embedding's sparse gradient and a dense one
    return start, gradients


def test_fused_adam_updates_weights_as_keras_adam_does():
    start, gradients = sparse_and_dense_gradients()
    keras_weights = adam_steps(keras.optimizers.Adam(0.01, global_clipnorm=1.0), start, gradients)
    fused_weights = adam_steps(FusedAdam(0.01, global_clipnorm=1.0), start, gradients)
    for keras_weight, fused_weight, start_weight in zip(keras_weights, fused_weights, start, strict=True):
        assert not np.allclose(fused_weight, start_weight)
        np.testing.assert_allclose(fused_weight, keras_weight, rtol=1e-5, atol=1e-6)


def test_fused_adam_squares_a_repeated_rows_summed_gradient_as_adam_defines():
    """An Embedding's gradient lists a row once per occurrence of its token. Adam's second
    moment is of the row's gradient, (g1 + g2)^2, which is what FusedAdam (like tf.keras'
    and PyTorch's Adam) computes; Keras 3's Adam squares the slices before summing them."""
    gradient = tf.IndexedSlices(tf.constant([[1.0], [2.0]]), tf.constant([0, 0]), tf.constant([2, 1]))
    optimizer = FusedAdam(0.1, beta_2=0.99)
    weight = keras.Variable(np.zeros((2, 1), np.float32))
    optimizer.apply([gradient], [weight])
    _, velocity = adam_moments(optimizer, weight)
    np.testing.assert_allclose(velocity.numpy(), [[0.01 * 3.0**2], [0.0]], rtol=1e-6)


def test_adam_moments_are_the_variables_keras_adam_updates():
    """The one reach into Keras' private attributes: this fails if Keras changes them."""
    optimizer = keras.optimizers.Adam(0.1, beta_1=0.9, beta_2=0.99)
    weight = keras.Variable(np.zeros(3, np.float32))
    optimizer.apply([tf.constant([1.0, 2.0, -4.0])], [weight])
    momentum, velocity = adam_moments(optimizer, weight)
    assert adam_moments(optimizer, keras.Variable(np.zeros(3, np.float32))) is None  # not trained by it
    np.testing.assert_allclose(momentum.numpy(), 0.1 * np.array([1.0, 2.0, -4.0]), rtol=1e-6)
    np.testing.assert_allclose(velocity.numpy(), 0.01 * np.array([1.0, 4.0, 16.0]), rtol=1e-6)


def test_the_trained_optimizer_state_carries_over_to_the_stock_optimizer():
    start, gradients = sparse_and_dense_gradients(steps=6)
    fused = FusedAdam(0.01)
    weights = adam_steps(fused, start, gradients[:3])
    fused.learning_rate = 0.005  # as ReduceLROnPlateau sets it
    stock = keras.optimizers.Adam(0.01)
    stock.build(weights)  # the same variables, as the saved model shares the training model's
    copy_optimizer_state(fused, stock, weights)
    assert int(stock.iterations.numpy()) == 3 and float(stock.learning_rate) == pytest.approx(0.005)

    snapshot = [weight.numpy() for weight in weights]
    results = []
    for optimizer in (fused, stock):  # both go on from the same state
        for weight, value in zip(weights, snapshot, strict=True):
            weight.assign(value)
        for step in gradients[3:]:
            optimizer.apply(step, weights)
        results.append([weight.numpy() for weight in weights])
    for fused_weight, stock_weight in zip(*results, strict=True):
        np.testing.assert_allclose(stock_weight, fused_weight, rtol=1e-5, atol=1e-6)

    untied = [keras.Variable(np.ones((3, 3), np.float32))]  # trained by the stock optimizer only
    other = keras.optimizers.Adam(0.01)
    other.build(untied)
    copy_optimizer_state(fused, other, untied)
    assert int(other.iterations.numpy()) == 6 and not np.any(adam_moments(other, untied[0])[0].numpy())
