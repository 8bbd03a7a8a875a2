import logging
import math

import keras
import numpy as np
import pytest

from keras_rnnlm.config import ModelConfig, TrainConfig
from keras_rnnlm.model import build_model, compile_model, training_model


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


@pytest.mark.parametrize("window_size", [5, None], ids=["windows", "bptt"])
def test_layer_norm_is_a_stock_layer_after_each_recurrent_layer_that_keras_alone_loads(tmp_path, window_size):
    model = build_model(ModelConfig(embedding_dim=8, units=16, layers=2, layer_norm=True), window_size, vocabulary_size=50)
    assert [type(layer) for layer in model.layers][1:5] == [
        keras.layers.LSTM, keras.layers.LayerNormalization, keras.layers.Dropout, keras.layers.LSTM,
    ]
    for weights in model.weights:  # gamma and beta away from 1 and 0, so they matter
        weights.assign(weights + np.random.default_rng(0).normal(size=weights.shape, scale=0.3))
    compile_model(model, TrainConfig())
    model.save(tmp_path / "model.keras")
    ids = np.random.default_rng(1).integers(1, 50, (3, 5)).astype(np.int32)
    loaded = keras.saving.load_model(tmp_path / "model.keras")  # Keras alone
    np.testing.assert_allclose(loaded(ids), model(ids), atol=1e-6)


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


def lanes_model(tie_embeddings=False):
    keras.utils.set_random_seed(0)
    config = ModelConfig(embedding_dim=16, units=16, layers=2, tie_embeddings=tie_embeddings)
    model = build_model(config, window_size=None, vocabulary_size=30)
    compile_model(model, TrainConfig())
    return model, training_model(model, TrainConfig(), lanes=3, bptt_steps=4, tie_embeddings=tie_embeddings)


def test_the_bptt_training_model_carries_each_lanes_state_to_the_next_batch():
    from keras_rnnlm.callbacks import ResetStates

    model, trainer = lanes_model()
    first, second = (np.random.default_rng(seed).integers(3, 30, (3, 4)).astype(np.int32) for seed in (1, 2))
    trainer.predict_on_batch(first)
    after_first = trainer.predict_on_batch(second)
    resets = ResetStates()
    resets.set_model(trainer)
    resets.on_epoch_begin(0)
    from_zero = trainer.predict_on_batch(second)
    assert not np.allclose(after_first, from_zero, atol=1e-4)  # the state carried over
    # Reading both batches as one sequence from zero state gives what the lanes gave.
    whole = model.predict(np.concatenate([first, second], axis=1), verbose=0)[:, 4:]  # (3, 4, vocabulary)
    np.testing.assert_allclose(keras.ops.softmax(after_first), whole, atol=1e-5)
    np.testing.assert_allclose(keras.ops.softmax(from_zero), model.predict(second, verbose=0), atol=1e-5)


def test_tied_embeddings_are_one_variable_and_the_saved_model_computes_the_same():
    from keras_rnnlm.model import copy_output_rows

    model, trainer = lanes_model(tie_embeddings=True)
    embeddings = model.get_layer("embedding").embeddings
    dense = model.get_layer("next_token")
    trained = [id(variable) for variable in trainer.trainable_variables]
    assert trained.count(id(embeddings)) == 1 and id(dense.kernel) not in trained and id(dense.bias) in trained
    ids = np.random.default_rng(3).integers(3, 30, (3, 4)).astype(np.int32)
    trainer.fit(ids, np.roll(ids, -1, axis=1), epochs=2, verbose=0, shuffle=False)
    copy_output_rows(model, embeddings)
    np.testing.assert_array_equal(dense.kernel.numpy(), embeddings.numpy().T)
    for layer in trainer.layers:
        if getattr(layer, "stateful", False):
            layer.reset_states()
    np.testing.assert_allclose(keras.ops.softmax(trainer.predict_on_batch(ids)), model.predict(ids, verbose=0), atol=1e-5)


@pytest.mark.parametrize("options", [{}, {"tie_embeddings": True, "embedding_dim": 16}], ids=["plain", "tied"])
def test_a_model_grown_for_added_tokens_predicts_as_before_with_unks_share_split_among_them(options):
    from keras_rnnlm.model import with_vocabulary
    from keras_rnnlm.vocab import UNK_ID

    config = ModelConfig(**{"embedding_dim": 8, "units": 16, **options})
    model = build_model(config, None, vocabulary_size=30)
    for weights in model.weights:
        weights.assign(weights + np.random.default_rng(0).normal(size=weights.shape, scale=0.3))
    grown = with_vocabulary(model, config, None, vocabulary_size=34)  # four tokens added
    text = np.random.default_rng(1).integers(1, 30, (2, 7)).astype(np.int32)
    text[0, 2] = UNK_ID
    before, after = model(text).numpy(), grown(text).numpy()
    kept = [number for number in range(30) if number != UNK_ID]
    np.testing.assert_allclose(after[..., kept], before[..., kept], rtol=1e-5)
    np.testing.assert_allclose(after[..., [UNK_ID, 30, 31, 32, 33]], np.repeat(before[..., [UNK_ID]] / 5, 5, axis=-1), rtol=1e-5)
    with_new_word = np.where(text == UNK_ID, 32, text)  # an added token reads as <unk> did
    np.testing.assert_allclose(grown(with_new_word).numpy(), after, rtol=1e-5)
