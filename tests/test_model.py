import logging
import math

import keras
import numpy as np
import pytest

from keras_rnnlm.config import ModelConfig, TrainConfig
from keras_rnnlm.model import build_model, compile_model


def test_shapes_and_layers_are_stock_keras():
    model = build_model(ModelConfig(embedding_dim=8, units=16, layers=2), window_size=5, vocabulary_size=50)
    assert isinstance(model, keras.Sequential)
    assert [type(layer) for layer in model.layers] == [
        keras.layers.Embedding, keras.layers.LSTM, keras.layers.Dropout, keras.layers.LSTM, keras.layers.Dropout,
        keras.layers.Dense, keras.layers.Activation,
    ]
    probabilities = model(np.zeros((3, 5), np.int32))
    assert probabilities.shape == (3, 50)
    np.testing.assert_allclose(np.sum(probabilities, axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("cell, layer", [("gru", keras.layers.GRU), ("simple_rnn", keras.layers.SimpleRNN)])
def test_other_cells(cell, layer):
    model = build_model(ModelConfig(cell=cell, embedding_dim=8, units=8), window_size=3, vocabulary_size=20)
    assert type(model.layers[1]) is layer


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
    assert 0.9 * vocabulary_size < math.exp(scores["loss"]) < 1.1 * vocabulary_size
    assert {"accuracy", "top5_accuracy"} <= set(scores)


def test_softmax_stays_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model(ModelConfig(units=8, embedding_dim=8), 3, 20)
        assert model.layers[1].compute_dtype == "bfloat16"
        assert model(np.zeros((2, 3), np.int32)).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
