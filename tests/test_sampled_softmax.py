"""Sampled softmax: the estimate, its candidates, and a model trained with it that
validates, saves and generates with the full softmax."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import small_config

from keras_rnnlm.generate import Generator
from keras_rnnlm.model import build_model, compile_model, copy_output_rows, output_rows, training_model
from keras_rnnlm.sampled_softmax import LogUniformCandidates, SampledSoftmaxTrainer, sampled_cross_entropy
from keras_rnnlm.train import train

RNG = np.random.default_rng(0)
VOCABULARY, UNITS, TARGETS = 1000, 16, 256
WEIGHTS = tf.constant(RNG.normal(size=(VOCABULARY, UNITS)), tf.float32)
BIASES = tf.constant(RNG.normal(size=VOCABULARY) * 0.1, tf.float32)
FEATURES = tf.constant(RNG.normal(size=(TARGETS, UNITS)), tf.float32)
IDS = tf.constant(RNG.integers(0, VOCABULARY, TARGETS))
FULL = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=IDS, logits=FEATURES @ tf.transpose(WEIGHTS) + BIASES).numpy()


def sampled_minus_full(candidates, seeds=5):
    """The sampled loss' mean less the full loss' mean, averaged over ``seeds`` draws."""
    sampler = LogUniformCandidates(VOCABULARY, candidates)
    means = [np.mean(sampled_cross_entropy(WEIGHTS, BIASES, IDS, FEATURES, sampler, tf.constant([3, step], tf.int64)))
             for step in range(seeds)]
    return float(np.mean(means) - FULL.mean())


def test_with_every_token_a_candidate_the_sampled_loss_is_the_full_loss():
    losses = sampled_cross_entropy(WEIGHTS, BIASES, IDS, FEATURES, LogUniformCandidates(VOCABULARY, VOCABULARY),
                                   tf.constant([0, 0], tf.int64))
    np.testing.assert_allclose(losses, FULL, rtol=1e-5)


def test_the_sampled_loss_approaches_the_full_loss_as_the_sample_grows():
    gaps = [abs(sampled_minus_full(candidates)) for candidates in (50, 250, 900, 999)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 0.01 < gaps[0], gaps


def test_candidates_are_distinct_follow_zipf_and_depend_on_the_seed_only():
    sampler = LogUniformCandidates(100, 10)
    drawn = [sampler(IDS[:3] % 100, tf.constant([1, step], tf.int64))[0].numpy() for step in range(3000)]
    assert all(len(set(ids)) == 10 for ids in drawn)
    frequency = np.bincount(np.concatenate(drawn), minlength=100) / len(drawn)
    # How often each id is drawn is the expected count the correction subtracts (3000 draws: ~0.01 noise).
    np.testing.assert_allclose(frequency, sampler.expected_counts.numpy(), atol=0.04)
    assert np.isclose(sampler.expected_counts.numpy().sum(), 10)
    again = sampler(IDS[:3] % 100, tf.constant([1, 7], tf.int64))[0].numpy()
    np.testing.assert_array_equal(again, drawn[7])


def test_a_model_trained_with_sampling_validates_with_the_full_softmax(song_file):
    """Training steps sample; evaluate (what validation runs) gives the stock model's exact cross-entropy."""
    config = small_config([song_file], model={"softmax": "sampled", "sampled_candidates": 8})
    model = build_model(config.model, config.data.window_size, 40)
    compile_model(model, config.train)
    trainer = training_model(model, config.train, sampled_candidates=8, seed=0)
    assert isinstance(trainer, SampledSoftmaxTrainer)
    windows = RNG.integers(0, 40, (64, config.data.window_size)).astype(np.int32)
    targets = (windows[:, -1] + 1) % 40  # learnable: the next id after the last
    history = trainer.fit(windows, targets, epochs=3, batch_size=16, verbose=0).history
    assert sorted(history) == ["loss"]  # accuracy needs every logit: validation's only
    copy_output_rows(model, output_rows(trainer))  # what the run's callback does at every epoch's end
    probabilities = model.predict(windows, verbose=0)
    exact = -np.mean(np.log(probabilities[np.arange(64), targets]))
    scores = trainer.evaluate(windows, targets, verbose=0, return_dict=True)
    assert scores["loss"] == pytest.approx(exact, rel=1e-5)
    assert scores["accuracy"] == pytest.approx(np.mean(probabilities.argmax(axis=1) == targets))


@pytest.mark.slow  # a rarer path (mixed precision and the sampled softmax together); CI runs it with the slow set
def test_a_sampled_softmax_run_in_mixed_precision_saves_the_stock_model_and_generates(song_file, tmp_path):
    config = small_config([song_file], model={"softmax": "sampled", "sampled_candidates": 8},
                          train={"epochs": 8, "precision": "mixed"})
    try:
        summary = train(config, tmp_path / "sampled", verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert summary["val_perplexity"] < 1.5  # the song is learned
    saved = keras.saving.load_model(tmp_path / "sampled" / "model.keras", compile=False)
    assert [type(layer) for layer in saved.layers] == [
        keras.layers.Embedding, keras.layers.LSTM, keras.layers.Dropout, keras.layers.Dense, keras.layers.Activation]
    assert saved.layers[1].compute_dtype == "bfloat16" and saved.layers[-1].compute_dtype == "float32"
    assert Generator.from_run(tmp_path / "sampled").generate(["cause baby now we got"], 2) == ["cause baby now we got bad blood"]
