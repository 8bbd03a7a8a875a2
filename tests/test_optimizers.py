"""The optimizers training uses equal the stock ones they stand for, and clip the gradient
the update applies."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rnnlm.keras_private import adam_moments
from keras_rnnlm.optimizers import FusedAdam, SparseRowsAdam, copy_optimizer_state, with_summed_gradient_clipping


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


def adam_on_sparse_gradients(optimizer, steps, touched, rows=200, units=4):
    """The weights after ``steps`` sparse gradients, each naming ``touched`` rows drawn
    at random (with repeats), from the same start and gradients whatever ``optimizer``."""
    rng = np.random.default_rng(1)
    start = rng.normal(size=(rows, units)).astype(np.float32)
    weight = keras.Variable(start)
    step = tf.function(lambda values, indices: optimizer.apply(
        [tf.IndexedSlices(values, indices, tf.constant([rows, units]))], [weight]))
    for _ in range(steps):
        step(tf.constant(rng.normal(size=(touched, units)) * 0.1, tf.float32), tf.constant(rng.integers(0, rows, touched)))
    if isinstance(optimizer, SparseRowsAdam):
        optimizer.catch_up()
    return start, weight.numpy()


def test_sparse_rows_adam_touching_every_row_is_adam():
    _, dense = adam_on_sparse_gradients(FusedAdam(0.01), steps=50, touched=2000)
    _, sparse = adam_on_sparse_gradients(SparseRowsAdam(0.01), steps=50, touched=2000)
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-6)


def test_sparse_rows_adam_moves_the_rows_a_step_did_not_touch_as_dense_adam_does():
    """Each step touches 8 of 200 rows, so a row sits out about 25 steps between touches.
    Dense Adam keeps moving it by its momentum; skipping those steps ("lazy" Adam) left
    the weights 21% of their movement away from dense Adam's, taking them when the row is
    next touched leaves them 0.4% away (after 2,000 steps; the rest is Adam's rate, which
    changes while a row sits out and is taken at one step)."""
    start, dense = adam_on_sparse_gradients(FusedAdam(0.01), steps=2000, touched=8)
    _, sparse = adam_on_sparse_gradients(SparseRowsAdam(0.01), steps=2000, touched=8)
    movement = np.abs(dense - start).max()
    assert np.abs(sparse - dense).max() < 0.01 * movement


def test_clipping_measures_a_sparse_gradient_with_its_repeated_rows_added_up():
    """A token twice in a batch: two slices of 1 for row 0, an applied gradient of norm 2.
    Keras' own clipping measures sqrt(2) and would step -1.41; the norm of what is applied
    clips it to -1."""
    variable = keras.Variable(np.zeros((3, 1), np.float32))
    optimizer = with_summed_gradient_clipping(keras.optimizers.SGD)(learning_rate=1.0, global_clipnorm=1.0)
    gradient = tf.IndexedSlices(tf.ones((2, 1)), tf.constant([0, 0]), tf.constant([3, 1]))
    optimizer.apply_gradients([(gradient, variable)])
    np.testing.assert_allclose(variable.numpy()[:, 0], [-1.0, 0.0, 0.0], rtol=1e-6)
