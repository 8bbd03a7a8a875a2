import keras
import numpy as np
import pytest

from keras_rnnlm.attention import CarriedMemoryAttention, attend_one

LANES, UNITS, STEPS, MEMORY = 2, 8, 3, 4


@pytest.fixture(scope="module")
def attention():
    keras.utils.set_random_seed(0)
    layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="attention")
    layer.build((None, None, UNITS), (None, None, UNITS))
    for weights in layer.weights:  # larger than initial weights, so the scores are not near uniform
        weights.assign(weights * 3)
    return layer


def features(length=12, seed=1):
    return np.random.default_rng(seed).normal(size=(LANES, length, UNITS)).astype(np.float32)


def stock_block(attention, window):
    """The saved model's block over a window: causal self-attention, then the residual."""
    return window + attention(window, window, use_causal_mask=True).numpy()


def test_each_step_reads_the_memory_of_the_steps_before_as_the_stock_block_reads_the_whole_window(attention):
    carried = CarriedMemoryAttention(attention, keras.layers.Dropout(0.5), memory=MEMORY, lanes=LANES)
    text = features()
    for start in range(0, text.shape[1], STEPS):
        output = carried(text[:, start:start + STEPS]).numpy()
        window = text[:, max(0, start - MEMORY):start + STEPS]  # the memory, then the step
        np.testing.assert_allclose(output, stock_block(attention, window)[:, -STEPS:], atol=1e-5)
    carried.reset_states()
    np.testing.assert_allclose(carried(text[:, :STEPS]).numpy(), stock_block(attention, text[:, :STEPS]), atol=1e-5)


def test_padding_is_neither_read_nor_remembered(attention):
    carried = CarriedMemoryAttention(attention, keras.layers.Dropout(0.5), memory=MEMORY, lanes=LANES)
    text = features(6)
    padded = text.copy()
    padded[:, 1] = 100.0  # a padded position: whatever it holds must not matter
    mask = np.ones((LANES, 3), bool)
    mask[:, 1] = False
    carried(padded[:, :3], mask=mask)
    output = carried(padded[:, 3:]).numpy()
    kept = np.concatenate([text[:, :1], text[:, 2:3]], axis=1)  # the two tokens the first step read
    np.testing.assert_allclose(output, stock_block(attention, np.concatenate([kept, text[:, 3:]], axis=1))[:, -3:], atol=1e-5)


def test_one_token_at_a_time_reads_the_last_memory_outputs_and_its_own(attention):
    carried = CarriedMemoryAttention(attention, keras.layers.Dropout(0.5), memory=MEMORY, lanes=LANES)
    text = features(9)
    expected = np.concatenate([carried(text[:, start:start + STEPS]).numpy() for start in range(0, 9, STEPS)], axis=1)
    keys, values = (np.zeros((LANES, MEMORY, 2, 4), np.float32) for _ in range(2))  # memory, heads, key_dim
    filled = np.zeros((LANES, MEMORY), bool)
    for position in range(9):
        output, keys, values, filled = attend_one(attention, text[:, position], keys, values, filled)
        window = text[:, max(0, position - MEMORY):position + 1]
        np.testing.assert_allclose(output.numpy(), stock_block(attention, window)[:, -1], atol=1e-5)
    # A step's later positions read its earlier ones besides the memory: their window is wider.
    assert not np.allclose(expected[:, -1], output.numpy())


def test_the_gradient_stops_at_the_memory_and_training_drops_the_attention_output(attention):
    import tensorflow as tf

    carried = CarriedMemoryAttention(attention, keras.layers.Dropout(0.5, seed=3), memory=MEMORY, lanes=LANES)
    text = tf.constant(features(6))
    carried(text[:, :3])
    with tf.GradientTape() as tape:
        tape.watch(text)
        output = carried(text[:, 3:])
    assert tape.gradient(output, text)[:, :3].numpy().max() == 0  # the remembered step gets no gradient
    carried.reset_states()
    trained = carried(text[:, :3], training=True).numpy()
    carried.reset_states()
    assert not np.allclose(trained, carried(text[:, :3]).numpy())


def attention_model(vocabulary_size=40, **options):
    from keras_rnnlm.config import ModelConfig
    from keras_rnnlm.model import build_model

    keras.utils.set_random_seed(4)
    model = build_model(ModelConfig(embedding_dim=UNITS, units=UNITS, layers=2, attention=True, **options), None, vocabulary_size)
    for weights in model.weights:
        weights.assign(weights + np.random.default_rng(5).normal(size=weights.shape, scale=0.3))
    return model


def test_reading_in_steps_with_a_memory_that_holds_the_text_is_the_saved_model_reading_it_whole(tmp_path):
    from keras_rnnlm.model import carried_state_model

    model = attention_model()
    text = np.random.default_rng(6).integers(1, 40, (LANES, 12)).astype(np.int32)
    whole = model(text).numpy()
    reader = carried_state_model(model, LANES, STEPS, attention_memory=12)
    logits = np.concatenate([reader(text[:, start:start + STEPS]).numpy() for start in range(0, 12, STEPS)], axis=1)
    np.testing.assert_allclose(keras.ops.softmax(logits).numpy(), whole, atol=1e-5)
    short = carried_state_model(model, LANES, STEPS, attention_memory=2)  # forgets the first token from the second step on
    logits = np.concatenate([short(text[:, start:start + STEPS]).numpy() for start in range(0, 12, STEPS)], axis=1)
    np.testing.assert_allclose(keras.ops.softmax(logits).numpy()[:, :STEPS], whole[:, :STEPS], atol=1e-5)
    assert not np.allclose(keras.ops.softmax(logits).numpy()[:, STEPS:], whole[:, STEPS:], atol=1e-3)
    model.save(tmp_path / "model.keras")  # stock layers: Keras alone loads it
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "model.keras")(text), whole, atol=1e-6)


def test_the_training_model_trains_the_attention_and_its_memory_is_backed_up_with_the_lanes_state():
    from keras_rnnlm.backup import stateful_layers
    from keras_rnnlm.config import TrainConfig
    from keras_rnnlm.model import compile_model, training_model

    model = attention_model(dropout=0.1)
    compile_model(model, TrainConfig())
    trainer = training_model(model, TrainConfig(), lanes=LANES, bptt_steps=STEPS, attention_memory=MEMORY)
    carried = [layer for layer in stateful_layers(trainer) if isinstance(layer, CarriedMemoryAttention)]
    assert len(carried) == 1
    attention = model.get_layer("attention")
    before = [weights.numpy() for weights in attention.weights]
    ids = np.random.default_rng(7).integers(1, 40, (LANES, STEPS)).astype(np.int32)
    trainer.train_on_batch(ids, ids)
    changed = {new.path.split("/")[-2] + "/" + new.name for old, new in zip(before, attention.weights) if not np.allclose(old, new.numpy())}
    # All but the key's bias, which adds the same to every score of a query: its gradient is 0.
    assert changed >= {"query/kernel", "key/kernel", "value/kernel", "attention_output/kernel"}
    assert carried[0].filled.numpy()[:, -STEPS:].all() and not carried[0].filled.numpy()[:, :-STEPS].any()
    carried[0].reset_states()
    assert not carried[0].filled.numpy().any()
