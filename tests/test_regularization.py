import math

import keras
import numpy as np
import pytest

from keras_rnnlm.callbacks import Perplexity
from keras_rnnlm.config import ModelConfig, TrainConfig
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.model import build_model, compile_model, training_model
from keras_rnnlm.regularization import ActivationPenalty, WeightDroppedLSTMCell, WordDroppedEmbedding, weight_dropped
from tests.conftest import small_config


def stock_lstm(units=6, inputs=4, **kwargs):
    keras.utils.set_random_seed(0)
    layer = keras.layers.LSTM(units, return_sequences=True, **kwargs)
    layer.build((None, None, inputs))
    return layer


def sequences(shape=(3, 5, 4), seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_weight_dropped_lstm_outside_training_is_the_stock_lstm_state_carried_and_masked():
    stock = stock_lstm()
    carried_stock = keras.layers.RNN(stock.cell, return_sequences=True, stateful=True)
    carried = weight_dropped(stock, rate=0.5, seed=0, stateful=True)
    mask = np.ones((3, 5), bool)
    mask[0, -2:] = False  # padding keeps the state
    for batch in (sequences(seed=1), sequences(seed=2)):  # the second batch starts from the first's state
        expected = carried_stock(batch, mask=mask, training=False)
        np.testing.assert_allclose(carried(batch, mask=mask, training=False), expected, atol=1e-5)
    for ours, theirs in zip(carried.states, carried_stock.states):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_weight_drop_uses_one_mask_of_the_recurrent_kernel_for_every_position():
    stock = stock_lstm()
    batch = sequences()
    dropped = weight_dropped(stock, rate=0.5, seed=7, stateful=False)(batch, training=True)
    # The first mask a cell of the same seed draws, applied to a copy of the stock LSTM.
    mask = np.asarray(WeightDroppedLSTMCell(stock.cell, 0.5, seed=7).get_recurrent_dropout_mask(None))
    assert mask.shape == tuple(stock.cell.recurrent_kernel.shape)
    assert set(np.unique(mask)) == {0.0, 2.0}
    assert 0.35 < np.mean(mask == 0) < 0.65
    copy = stock_lstm()
    copy.set_weights([stock.cell.kernel.numpy(), stock.cell.recurrent_kernel.numpy() * mask, stock.cell.bias.numpy()])
    np.testing.assert_allclose(dropped, copy(batch), atol=1e-5)
    assert not np.allclose(dropped, stock(batch), atol=1e-3)


def test_weight_drop_trains_the_stock_cells_weights():
    stock = stock_lstm()
    layer = weight_dropped(stock, rate=0.3, seed=0, stateful=False)
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(sequences(), training=True))
    gradients = tape.gradient(loss, stock.cell.trainable_variables)
    assert all(gradient is not None and np.any(np.asarray(gradient)) for gradient in gradients)


def test_word_dropout_drops_every_occurrence_of_a_word_type_together():
    keras.utils.set_random_seed(0)
    embedding = keras.layers.Embedding(40, 8, mask_zero=True)
    ids = np.tile(np.arange(1, 40, dtype=np.int32), (4, 2))  # every word 8 times
    plain = np.asarray(embedding(ids))
    layer = WordDroppedEmbedding(embedding, rate=0.5, seed=3)
    np.testing.assert_array_equal(layer(ids, training=False), plain)
    dropped = np.asarray(layer(ids, training=True))
    scale = dropped[..., 0] / plain[..., 0]  # 0 or 2 at each position
    for word in range(1, 40):
        assert len(np.unique(np.round(scale[ids == word], 4))) == 1  # all its occurrences alike
    assert set(np.unique(np.round(scale, 4))) == {0.0, 2.0}
    np.testing.assert_array_equal(layer.compute_mask(ids), embedding.compute_mask(ids))


def test_activation_penalties_add_ar_and_tar_to_the_loss_in_training_only():
    features = sequences((2, 4, 3))
    layer = ActivationPenalty(alpha=2.0, beta=1.0)
    np.testing.assert_array_equal(layer(features, training=False), features)
    assert not layer.losses
    np.testing.assert_array_equal(layer(features, training=True), features)
    expected = 2.0 * np.mean(features**2) + np.mean((features[:, 1:] - features[:, :-1]) ** 2)
    assert [float(loss) for loss in layer.losses] == [pytest.approx(expected, rel=1e-5)]
    assert float(layer.penalty.result()) == pytest.approx(expected, rel=1e-5)  # what the logs show


def test_locked_dropout_draws_one_mask_a_sequence():
    config = ModelConfig(embedding_dim=8, units=8, layers=2, dropout=0.5, embedding_dropout=0.5, locked_dropout=True)
    model = build_model(config, window_size=None, vocabulary_size=20)
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [layer.noise_shape for layer in dropouts] == [(None, 1, 8)] * 3
    dropped = np.asarray(dropouts[0](np.ones((3, 6, 8), np.float32), training=True))
    assert np.all(dropped == dropped[:, :1, :])  # the same at every position
    assert 0 < np.mean(dropped == 0) < 1
    windows = build_model(config, window_size=5, vocabulary_size=20)
    assert windows.layers[-3].noise_shape is None  # the top of a window model gives one vector: nothing to lock


def regularized_lanes_model(**regularization):
    keras.utils.set_random_seed(0)
    config = ModelConfig(embedding_dim=16, units=16, layers=2, tie_embeddings=True, **regularization)
    model = build_model(config, window_size=None, vocabulary_size=30)
    compile_model(model, TrainConfig())
    return model, training_model(model, TrainConfig(), lanes=3, bptt_steps=4, tie_embeddings=True, regularize=config)


def test_the_training_model_applies_the_regularization_and_the_saved_model_stays_stock():
    model, trainer = regularized_lanes_model(weight_dropout=0.5, word_dropout=0.1, activation_regularization=2.0,
                                             temporal_activation_regularization=1.0)
    kinds = [type(layer).__name__ for layer in trainer.layers]
    assert kinds[:2] == ["WordDroppedEmbedding", "RNN"]
    assert kinds[kinds.index("Dropout", 3) - 1:][:3] == ["ActivationPenalty", "Dropout", "ActivationPenalty"]
    assert all(isinstance(layer.cell, WeightDroppedLSTMCell) for layer in trainer.layers if isinstance(layer, keras.layers.RNN))
    assert {type(layer).__name__ for layer in model.layers} == {"Embedding", "LSTM", "Dropout", "Dense", "Activation"}
    # The training model trains the saved model's weights (all but the tied output kernel, copied from the embeddings).
    assert {id(variable) for variable in trainer.trainable_variables} < {id(variable) for variable in model.trainable_variables}
    ids = np.random.default_rng(0).integers(3, 30, (3, 4)).astype(np.int32)
    before = [variable.numpy() for variable in trainer.trainable_variables]
    logs = trainer.train_on_batch(ids, ids, return_dict=True)
    assert logs["ar"] > 0 and logs["tar"] > 0  # the penalties, logged
    Perplexity().on_epoch_end(0, logs)
    assert logs["perplexity"] == pytest.approx(math.exp(logs["loss"] - logs["ar"] - logs["tar"]))  # without them
    assert all(not np.allclose(old, new.numpy()) for old, new in zip(before, trainer.trainable_variables))


def test_turned_off_the_training_model_is_unchanged():
    _, plain = regularized_lanes_model()
    assert [type(layer).__name__ for layer in plain.layers] == ["Embedding", "RNN", "Dropout", "RNN", "Dropout", "RowsOutput", "Activation"]


@pytest.mark.parametrize(
    "sections, named",
    [
        ({"model": {"cell": "gru", "weight_dropout": 0.5}}, "model.weight_dropout"),
        ({"model": {"temporal_activation_regularization": 1.0}}, "model.temporal_activation_regularization"),
        ({"model": {"word_dropout": 1.0}}, "model.word_dropout"),
    ],
)
def test_settings_that_cannot_go_together_are_refused_naming_the_key(tmp_path, sections, named):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a b c\n")
    with pytest.raises(RnnlmError, match=named):
        small_config([corpus], **sections)


def test_layer_norm_follows_each_lstm_and_the_penalties_read_its_output():
    model, trainer = regularized_lanes_model(layer_norm=True, activation_regularization=2.0,
                                             temporal_activation_regularization=1.0)
    kinds = [type(layer).__name__ for layer in trainer.layers]
    assert kinds == ["Embedding", "RNN", "LayerNormalization", "Dropout", "RNN", "LayerNormalization",
                     "ActivationPenalty", "Dropout", "ActivationPenalty", "RowsOutput", "Activation"]
    assert [type(layer).__name__ for layer in model.layers].count("LayerNormalization") == 2
