"""Each reach into Keras' and KerasTuner's private attributes still reads what it means:
a release that changes one fails here, not in a run."""

import keras
import numpy as np
import tensorflow as tf

from keras_rnnlm.keras_private import (
    FitAcrossWorkers,
    GradientClippingHook,
    adam_moments,
    keras_tuner_tracebacks_off,
    optimizer_slot,
    trained_variables,
)


def test_adam_moments_are_the_variables_keras_adam_updates():
    optimizer = keras.optimizers.Adam(0.1, beta_1=0.9, beta_2=0.99)
    weights = [keras.Variable(np.zeros(2, np.float32)), keras.Variable(np.zeros(3, np.float32))]
    optimizer.apply([tf.constant([0.5, 0.5]), tf.constant([1.0, 2.0, -4.0])], weights)
    assert optimizer_slot(optimizer, weights[1]) == 1 and trained_variables(optimizer) == weights
    momentum, velocity = adam_moments(optimizer, weights[1])
    assert adam_moments(optimizer, keras.Variable(np.zeros(3, np.float32))) is None  # not trained by it
    np.testing.assert_allclose(momentum.numpy(), 0.1 * np.array([1.0, 2.0, -4.0]), rtol=1e-6)
    np.testing.assert_allclose(velocity.numpy(), 0.01 * np.array([1.0, 4.0, 16.0]), rtol=1e-6)


def test_keras_clips_through_the_hook():
    class HalvingSGD(GradientClippingHook, keras.optimizers.SGD):
        def clipped_gradients(self, grads):
            return [gradient / 2 for gradient in grads]

    for optimizer in (HalvingSGD(1.0, global_clipnorm=100.0), HalvingSGD(1.0)):  # called at every update
        weight = keras.Variable(np.zeros(1, np.float32))
        optimizer.apply([tf.constant([1.0])], [weight])
        np.testing.assert_allclose(weight.numpy(), [-0.5])
    stock_clipping = type("Stock", (GradientClippingHook, keras.optimizers.SGD), {})(1.0, global_clipnorm=0.5)
    weight = keras.Variable(np.zeros(1, np.float32))
    stock_clipping.apply([tf.constant([4.0])], [weight])
    np.testing.assert_allclose(weight.numpy(), [-0.5])  # Keras' own clipping, by default


def test_fit_builds_through_the_overridden_method_and_trains_as_before():
    """Keras' ``fit`` still builds a model through ``_maybe_symbolic_build``, which
    FitAcrossWorkers overrides (its multi-worker branch runs in tests/test_multiworker.py)."""
    calls = []

    class Spied(FitAcrossWorkers, keras.Sequential):
        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            calls.append(iterator is not None)
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    results = []
    for kind in (Spied, keras.Sequential):
        keras.utils.set_random_seed(0)
        with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():  # a strategy: Keras builds the model before fit's first step
            model = kind([keras.Input((3,)), keras.layers.Dense(2)])
            model.compile("sgd", "mse")
        results.append(model.fit(np.ones((8, 3)), np.zeros((8, 2)), epochs=2, verbose=0).history["loss"])
    assert calls == [True]
    np.testing.assert_allclose(results[0], results[1])


def test_keras_tuner_tracebacks_are_off_inside_and_as_before_after():
    from keras_tuner.src import config

    before = config.DEBUG
    with keras_tuner_tracebacks_off():
        assert config.DEBUG is False
    assert config.DEBUG == before


def test_an_rnn_draws_a_per_call_masks_cells_masks_once_a_call_and_clears_them():
    import numpy as np

    from keras_rnnlm.keras_private import PerCallMasks

    class Cell(PerCallMasks, keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.state_size, self.output_size = 2, 2
            self.dropout, self.recurrent_dropout = 0.0, 0.5
            self.seed_generator = keras.random.SeedGenerator(0)
            self.masks = []

        def call(self, inputs, states, training=False):
            self.masks.append(self.get_recurrent_dropout_mask(states[0]))
            return inputs, [inputs]

    cell = Cell()
    keras.layers.RNN(cell, unroll=True)(np.ones((3, 4, 2), np.float32))
    assert len(cell.masks) == 4 and all(mask is cell.masks[0] for mask in cell.masks)  # drawn once, before the loop
    assert cell._recurrent_dropout_mask is None  # cleared after it
