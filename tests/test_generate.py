import numpy as np
import pytest
import tensorflow as tf

from conftest import small_config
from keras_rnnlm.generate import Generator
from keras_rnnlm.runs import RunFolder
from keras_rnnlm.tokenizer import Tokenizer
from keras_rnnlm.train import train
from keras_rnnlm.vocab import PAD_ID, UNK_ID, Vocabulary


@pytest.fixture(scope="module")
def song_generator(tmp_path_factory):
    """A model that has memorized the song, loaded back from its run folder."""
    folder = tmp_path_factory.mktemp("song")
    song = folder / "song.txt"
    song.write_text("cause baby now we got bad blood\nyou know it used to be mad love\n" * 40)
    train(small_config([song], train={"epochs": 12}), folder / "run", verbose=0)
    config, vocabulary, tokenizer, model = RunFolder(folder / "run").load()
    return Generator(model, vocabulary, tokenizer, config.data.window_size)


def test_greedy_continues_a_memorized_song_word_for_word(song_generator):
    (text,) = song_generator.generate(["cause baby now we got"], num_tokens=12, temperature=0)
    assert text == "cause baby now we got bad blood\nyou know it used to be mad love\n"


def test_short_and_empty_prompts_are_left_padded_like_a_file_start(song_generator):
    short, empty = song_generator.generate(["cause baby", ""], num_tokens=3, temperature=0)
    assert short == "cause baby now we got"
    assert empty == "cause baby now"


def test_seeded_sampling_is_reproducible(song_generator):
    first = song_generator.generate(["you know"] * 3, num_tokens=10, temperature=5.0, seed=7)
    assert song_generator.generate(["you know"] * 3, num_tokens=10, temperature=5.0, seed=7) == first
    assert song_generator.generate(["you know"] * 3, num_tokens=10, temperature=5.0, seed=8) != first


def fixed_model(probabilities):
    """A stand-in model that always predicts ``probabilities``, whatever the window."""
    table = tf.constant([probabilities], tf.float32)
    return lambda windows, training=False: tf.tile(table, [tf.shape(windows)[0], 1])


def test_padding_and_unk_are_never_generated_and_top_k_holds():
    vocabulary = Vocabulary(["<pad>", "<unk>", "<eol>", "a", "b", "c"])
    model = fixed_model([0.4, 0.4, 0.02, 0.1, 0.05, 0.03])  # pad and unk are the likeliest
    generator = Generator(model, vocabulary, Tokenizer(), window_size=2)
    ids = generator.generate_ids(tf.zeros((64, 2), tf.int32), 50, 1.0, 0, 3).numpy()
    assert not np.isin(ids, [PAD_ID, UNK_ID]).any()
    assert set(np.unique(ids)) == {2, 3, 4, 5}
    top2 = generator.generate_ids(tf.zeros((64, 2), tf.int32), 50, 1.0, 2, 3).numpy()
    assert set(np.unique(top2)) == {3, 4}
    greedy = generator.generate_ids(tf.zeros((2, 2), tf.int32), 4, 0.0, 0, 3).numpy()
    assert (greedy == 3).all()
    assert generator.generate_ids(tf.zeros((2, 2), tf.int32), 0, 1.0, 0, 3).numpy().shape == (2, 0)
