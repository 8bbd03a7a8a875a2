import logging
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rnnlm.config import ModelConfig, TrainConfig
from keras_rnnlm.model import (
    FusedAdam,
    NextTokenCrossEntropy,
    NextTokenMetrics,
    WindowLSTM,
    build_model,
    compile_model,
)


def test_shapes_and_layers():
    model = build_model(ModelConfig(embedding_dim=8, units=16, layers=2), window_size=5, vocabulary_size=50)
    assert isinstance(model, keras.Sequential)
    assert [type(layer).__name__ for layer in model.layers] == ["Embedding", "WindowLSTM", "Dropout", "WindowLSTM", "Dropout", "Dense", "Activation"]
    assert isinstance(model.layers[1], keras.layers.LSTM)
    probabilities = model(np.zeros((3, 5), np.int32))
    assert probabilities.shape == (3, 50)
    np.testing.assert_allclose(np.sum(probabilities, axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("cell, layer", [("gru", "GRU"), ("simple_rnn", "SimpleRNN")])
def test_other_cells(cell, layer):
    model = build_model(ModelConfig(cell=cell, embedding_dim=8, units=8), window_size=3, vocabulary_size=20)
    assert type(model.layers[1]).__name__ == layer


def test_configs_that_lose_the_cudnn_kernel_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="keras_rnnlm"):
        build_model(ModelConfig(units=8, embedding_dim=8), 3, 20)
        assert "cuDNN" not in caplog.text
        build_model(ModelConfig(units=8, embedding_dim=8, recurrent_dropout=0.1), 3, 20)
        assert "cannot use the fused cuDNN kernel" in caplog.text


def test_fresh_model_perplexity_is_about_the_vocabulary_size():
    vocabulary_size = 500
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(), window_size=5, vocabulary_size=vocabulary_size)
    compile_model(model, TrainConfig())
    windows = np.random.default_rng(0).integers(3, vocabulary_size, (512, 5)).astype(np.int32)
    targets = np.random.default_rng(1).integers(3, vocabulary_size, 512).astype(np.int32)
    scores = model.evaluate(windows, targets, return_dict=True, verbose=0)
    assert 0.9 * vocabulary_size < scores["perplexity"] < 1.1 * vocabulary_size


def test_perplexity_is_exp_of_mean_cross_entropy_not_mean_of_exps():
    metric = NextTokenMetrics()
    confident = np.array([[0.9, 0.1]], np.float32)  # cross-entropy -log 0.9
    unsure = np.array([[0.1, 0.9]], np.float32)  # cross-entropy -log 0.1
    metric.update_state(np.array([0]), confident)
    metric.update_state(np.array([0]), unsure)
    expected = math.exp((-math.log(0.9) - math.log(0.1)) / 2)
    assert float(metric.result()["perplexity"]) == pytest.approx(expected, rel=1e-4)
    assert float(metric.result()["perplexity"]) < (1 / 0.9 + 1 / 0.1) / 2


def test_metrics_match_keras_own_metrics():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.full(50, 0.5), size=300).astype(np.float32)
    targets = rng.integers(0, 50, 300)
    weights = rng.uniform(0, 2, 300).astype(np.float32)
    for sample_weight in (None, weights):
        metric = NextTokenMetrics()
        metric.update_state(targets[:100], probabilities[:100], None if sample_weight is None else sample_weight[:100])
        metric.update_state(targets[100:], probabilities[100:], None if sample_weight is None else sample_weight[100:])
        result = {name: float(value) for name, value in metric.result().items()}
        expected = {
            "accuracy": keras.metrics.SparseCategoricalAccuracy(),
            "top5_accuracy": keras.metrics.SparseTopKCategoricalAccuracy(k=5),
        }
        for name, keras_metric in expected.items():
            keras_metric.update_state(targets, probabilities, sample_weight=sample_weight)
            assert result[name] == pytest.approx(float(keras_metric.result()), abs=1e-6), name
        cross_entropy = -np.log(probabilities[np.arange(300), targets])
        mean = np.average(cross_entropy, weights=sample_weight)
        assert result["perplexity"] == pytest.approx(math.exp(mean), rel=1e-5)
    metric.reset_state()
    metric.update_state(targets[:1], probabilities[:1])
    assert float(metric.result()["perplexity"]) == pytest.approx(math.exp(cross_entropy[0]), rel=1e-5)
    metric.reset_state()
    metric.update_state(np.array([1]), np.array([[0.4, 0.4, 0.2]], np.float32))  # tied with the best
    assert float(metric.result()["accuracy"]) == 1.0


def test_softmax_stays_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model(ModelConfig(units=8, embedding_dim=8), 3, 20)
        assert model.layers[1].compute_dtype == "bfloat16"
        assert model(np.zeros((2, 3), np.int32)).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_fused_adam_updates_weights_as_keras_adam_does():
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(8,)).astype(np.float32)]
    gradients = [
        [tf.IndexedSlices(tf.constant(rng.normal(size=(3, 8)), tf.float32), tf.constant([4, 9, 4]), tf.constant([50, 8])),
         tf.constant(rng.normal(size=(8,)), tf.float32)]
        for _ in range(5)
    ]  # an Embedding's sparse gradient (a row twice) and a dense one
    results = []
    for optimizer in (keras.optimizers.Adam(0.01, global_clipnorm=1.0), FusedAdam(0.01, global_clipnorm=1.0)):
        weights = [keras.Variable(value) for value in start]
        for step in gradients:
            optimizer.apply(step, weights)
        results.append([weight.numpy() for weight in weights])
    for keras_weight, fused_weight, start_weight in zip(*results, start, strict=True):
        assert not np.allclose(fused_weight, start_weight)
        np.testing.assert_allclose(fused_weight, keras_weight, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_next_token_loss_and_its_gradients_match_keras_sparse_cross_entropy(precision):
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = build_model(ModelConfig(embedding_dim=8, units=16), window_size=5, vocabulary_size=50)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    rng = np.random.default_rng(0)
    windows = rng.integers(0, 50, (32, 5)).astype(np.int32)
    targets = rng.integers(0, 50, 32).astype(np.int32)
    weights = rng.uniform(0, 2, 32).astype(np.float32)
    results = []
    for loss in (NextTokenCrossEntropy(), keras.losses.SparseCategoricalCrossentropy()):
        with tf.GradientTape() as tape:
            probabilities = model(windows, training=False)
            assert hasattr(probabilities, "_keras_logits")  # the fast path's logits are there
            value = loss(targets, probabilities, sample_weight=weights)
        results.append([value, *map(tf.convert_to_tensor, tape.gradient(value, model.trainable_weights))])
    for ours, theirs in zip(*results, strict=True):
        np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(theirs, np.float32), rtol=1e-4, atol=1e-6)
    plain = tf.constant(np.full((2, 50), 1 / 50, np.float32))  # not a softmax output: Keras' loss
    np.testing.assert_allclose(NextTokenCrossEntropy()(targets[:2], plain), np.log(50), rtol=1e-6)


def test_next_token_loss_stays_finite_when_the_target_probability_underflows():
    logits = tf.constant([[0.0, 200.0, 0.0]])  # the target (id 0) trails by 200 nats
    with tf.GradientTape() as tape:
        tape.watch(logits)
        probabilities = keras.activations.softmax(logits)
        loss = NextTokenCrossEntropy()(tf.constant([0]), probabilities)
    np.testing.assert_allclose(loss, -np.log(np.finfo(np.float32).tiny), rtol=1e-6)  # 87.3, not inf
    np.testing.assert_allclose(tape.gradient(loss, logits), [[-1.0, 1.0, 0.0]], atol=1e-6)  # softmax - one-hot


@pytest.mark.parametrize("precision, tolerance", [("float32", 1e-5), ("mixed_bfloat16", 3e-2)])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_window_lstm_computes_keras_lstm(precision, tolerance, return_sequences, monkeypatch):
    from keras_rnnlm import model as model_module

    cells, lstm_cell = [], model_module.lstm_cell  # the window path's cell calls: one per position

    def counted_cell(*args):
        cells.append(args)
        return lstm_cell(*args)

    monkeypatch.setattr(model_module, "lstm_cell", counted_cell)
    # The path runs only under a 16-bit compute dtype; opted in here for float32, its
    # arithmetic can be held to Keras' at float32's precision.
    monkeypatch.setattr(WindowLSTM, "WINDOW_PATH_DTYPES", ("bfloat16", "float32"))
    keras.mixed_precision.set_global_policy(precision)
    try:
        ours, theirs = (kind(16, unroll=True, return_sequences=return_sequences) for kind in (WindowLSTM, keras.layers.LSTM))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    inputs = tf.constant(np.random.default_rng(0).normal(size=(8, 5, 12)), tf.float32)
    ours.build(inputs.shape)
    theirs.build(inputs.shape)
    for mine, keras_weight in zip(ours.weights, theirs.weights, strict=True):
        mine.assign(keras_weight + np.random.default_rng(1).normal(0, 0.3, keras_weight.shape))  # a bias too
        keras_weight.assign(mine)
    results = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = tf.cast(layer(inputs, training=True), tf.float32)
            value = tf.reduce_sum(outputs * tf.range(outputs.shape[-1], dtype=tf.float32))
        results.append([outputs, *tape.gradient(value, [inputs, *layer.trainable_weights])])
    assert len(cells) == 5
    for mine, keras_result in zip(*results, strict=True):
        scale = float(tf.reduce_max(tf.abs(keras_result)))
        np.testing.assert_allclose(np.asarray(mine), np.asarray(keras_result), atol=tolerance * scale)


def test_window_lstm_is_keras_path_in_float32_and_when_not_unrolled(monkeypatch):
    from keras_rnnlm import model as model_module

    cells = []
    monkeypatch.setattr(model_module, "lstm_cell", lambda *args: cells.append(args))
    inputs = tf.zeros((2, 5, 4))
    WindowLSTM(3, unroll=True)(inputs)  # float32
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        WindowLSTM(3)(inputs)  # not unrolled: Keras' loop, the cuDNN kernel on a GPU
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert cells == []
