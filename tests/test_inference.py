import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rnnlm.config import ModelConfig
from keras_rnnlm.inference import NextTokenLogits
from keras_rnnlm.model import build_model
from keras_rnnlm.sampling import BLOCK

VOCABULARY_SIZE, WINDOW_SIZE, BANNED = 300, 5, [0, 1]


def windows(batch_size=16, seed=0):
    return tf.constant(np.random.default_rng(seed).integers(0, VOCABULARY_SIZE, (batch_size, WINDOW_SIZE)), tf.int32)


def expected_probabilities(model, inputs):
    """The model's probabilities with the banned ids removed and the rest renormalized."""
    probabilities = model(inputs, training=False).numpy()
    probabilities[:, BANNED] = 0
    return probabilities / probabilities.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    "model_config, fused",
    [
        (ModelConfig(embedding_dim=16, units=32), True),
        (ModelConfig(embedding_dim=16, units=32, layers=2), True),
        (ModelConfig(embedding_dim=16, units=32, cell="gru"), False),
        (ModelConfig(embedding_dim=16, units=32, layers=2, layer_norm=True), False),
    ],
    ids=["lstm", "two_lstm_layers", "gru", "layer_norm"],
)
def test_logits_give_the_keras_models_probabilities(model_config, fused):
    keras.utils.set_random_seed(1)
    model = build_model(model_config, WINDOW_SIZE, VOCABULARY_SIZE)
    for weights in model.weights:  # larger than initial weights, so every gate matters
        weights.assign(weights + tf.random.normal(weights.shape, stddev=0.3))
    next_logits = NextTokenLogits(model, VOCABULARY_SIZE, BANNED)
    assert (next_logits.lstm_layers is not None) == fused
    steps = next_logits.prepare()
    start, logits_of, advance = tf.function(steps.start), tf.function(steps.logits), tf.function(steps.advance)

    window = windows()
    state = start(window)
    # More tokens than the window holds, so every LSTM chain has started after `start`.
    for new_ids in np.random.default_rng(1).integers(0, VOCABULARY_SIZE, (2 * WINDOW_SIZE, 16)):
        logits = logits_of(state).numpy()
        assert logits.shape == (16, next_logits.padded_size) and next_logits.padded_size % BLOCK == 0
        assert np.all(np.isneginf(logits[:, BANNED])) and np.all(np.isneginf(logits[:, VOCABULARY_SIZE:]))
        probabilities = tf.nn.softmax(logits).numpy()[:, :VOCABULARY_SIZE]
        np.testing.assert_allclose(probabilities, expected_probabilities(model, window), atol=1e-6)
        state = advance(state, tf.constant(new_ids, tf.int32))
        window = tf.concat([window[:, 1:], new_ids[:, np.newaxis]], axis=1)  # the window slides


def test_any_callable_that_returns_probabilities_works():
    table = tf.nn.softmax(tf.random.normal((1, VOCABULARY_SIZE), seed=3))
    model = lambda inputs, training=False: tf.tile(table, [tf.shape(inputs)[0], 1])  # noqa: E731
    steps = NextTokenLogits(model, VOCABULARY_SIZE, BANNED).prepare()
    logits = steps.logits(steps.start(windows(4)))
    expected = table.numpy().copy()
    expected[:, BANNED] = 0
    np.testing.assert_allclose(tf.nn.softmax(logits)[:, :VOCABULARY_SIZE], np.tile(expected / expected.sum(), (4, 1)), atol=1e-6)


@pytest.mark.parametrize(
    "options, fast",
    [({}, True), ({"cell": "gru"}, False), ({"layer_norm": True}, False), ({"attention": True, "attention_heads": 2}, False)],
    ids=["lstm", "gru", "layer_norm", "attention"],
)
def test_a_bptt_models_carried_state_gives_the_keras_models_probabilities(options, fast):
    keras.utils.set_random_seed(2)
    config = ModelConfig(embedding_dim=16, units=32, layers=2, **options)
    model = build_model(config, None, VOCABULARY_SIZE)
    for weights in model.weights:
        weights.assign(weights + tf.random.normal(weights.shape, stddev=0.3))
    # The memory holds the whole text, so the step reads what the Keras model reads.
    next_logits = NextTokenLogits(model, VOCABULARY_SIZE, BANNED, attention_memory=config.memory and 16)
    assert next_logits.sequences and (next_logits.lstm_layers is not None) == fast
    steps = next_logits.prepare()
    rng = np.random.default_rng(3)
    prompts = rng.integers(3, VOCABULARY_SIZE, (4, 6)).astype(np.int32)
    prompts[1, :4] = 0  # a shorter prompt, left-padded
    state = steps.start(tf.constant(prompts))
    texts = prompts
    for new_ids in rng.integers(3, VOCABULARY_SIZE, (3, 4)):
        probabilities = model(texts, training=False).numpy()[:, -1]  # the Keras model reads the whole text
        probabilities[:, BANNED] = 0
        np.testing.assert_allclose(tf.nn.softmax(steps.logits(state))[:, :VOCABULARY_SIZE],
                                   probabilities / probabilities.sum(axis=1, keepdims=True), atol=1e-5)
        state = steps.advance(state, tf.constant(new_ids, tf.int32))
        texts = np.concatenate([texts, new_ids[:, np.newaxis]], axis=1)
