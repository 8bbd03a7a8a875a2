"""The sampler on fixed logits, with known answers."""

import numpy as np
import pytest
import tensorflow as tf

from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.sampling import BLOCK, Sampling, next_ids, sample_in_blocks

# Probabilities of ids 0..5 (ids 0 and 1 are banned: logit -inf), padded to one block:
# without them, id 2 has 0.05, id 3 0.5, id 4 0.3, id 5 0.15.
TABLE = [0.0, 0.0, 0.02, 0.2, 0.12, 0.06]


def logits_of(probabilities, rows=256):
    logits = np.full(BLOCK, -np.inf, np.float32)
    with np.errstate(divide="ignore"):
        logits[: len(probabilities)] = np.log(np.array(probabilities, np.float32))
    return tf.constant(np.tile(logits, (rows, 1)))


def drawn(probabilities, sampling=Sampling(), seed=3):
    """The set of ids drawn for 256 rows."""
    uniform = tf.random.stateless_uniform([256, 2], seed=[seed, 0])
    ids = next_ids(logits_of(probabilities), sampling.temperature, sampling.top_k, sampling.top_p, uniform)
    return set(np.unique(ids.numpy()).tolist())


def test_the_model_distribution_draws_every_allowed_id_and_never_a_banned_one():
    assert drawn(TABLE) == {2, 3, 4, 5}


def test_greedy_is_the_argmax_and_near_zero_temperature_equals_it():
    assert drawn(TABLE, Sampling(temperature=0.0)) == {3}
    assert drawn(TABLE, Sampling(temperature=1e-3)) == {3}


def test_top_k_never_leaves_the_k_most_likely():
    assert drawn(TABLE, Sampling(top_k=1)) == {3}
    assert drawn(TABLE, Sampling(top_k=2)) == {3, 4}
    assert drawn(TABLE, Sampling(top_k=3)) == {3, 4, 5}
    assert drawn(TABLE, Sampling(top_k=1_000)) == {2, 3, 4, 5}  # more than the vocabulary keeps all


def test_top_p_keeps_exactly_the_nucleus():
    assert drawn(TABLE, Sampling(top_p=0.5)) == {3}
    assert drawn(TABLE, Sampling(top_p=0.7)) == {3, 4}
    assert drawn(TABLE, Sampling(top_p=0.85)) == {3, 4, 5}
    assert drawn(TABLE, Sampling(top_p=0.96)) == {2, 3, 4, 5}


def test_temperature_and_top_k_compose():
    assert drawn([0.0, 0.0, 0.25, 0.25, 0.25, 0.25], Sampling(temperature=2.0, top_k=4)) == {2, 3, 4, 5}
    assert drawn(TABLE, Sampling(temperature=3.0, top_k=2)) == {3, 4}


def test_block_sampling_draws_each_id_with_its_probability():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.full(3 * BLOCK, 0.3))
    probabilities[[5, 200, 300]] = 0  # never drawn, in different blocks
    probabilities /= probabilities.sum()
    draws = 200_000
    logits = tf.tile(tf.math.log(tf.constant(probabilities, tf.float32))[tf.newaxis], [draws, 1])
    uniform = tf.random.stateless_uniform([draws, 2], seed=[4, 2])
    ids = sample_in_blocks(logits, uniform).numpy()
    frequencies = np.bincount(ids, minlength=3 * BLOCK) / draws
    assert frequencies[[5, 200, 300]].sum() == 0
    # Binomial standard error is at most sqrt(0.25 / 200,000) ~ 0.0011.
    np.testing.assert_allclose(frequencies, probabilities, atol=0.005)
    assert np.array_equal(sample_in_blocks(logits[:100], uniform[:100]), ids[:100])  # row by row


@pytest.mark.parametrize(
    "strategy, settings, expected",
    [
        ("greedy", {"temperature": 5.0, "top_k": 3}, Sampling(temperature=0.0)),
        ("temperature", {}, Sampling()),
        ("temperature", {"temperature": 0.7, "top_p": 0.5}, Sampling(temperature=0.7, top_p=0.5)),
        ("top_k", {}, Sampling(top_k=40)),
        ("top_k", {"top_k": 3, "temperature": 2.0}, Sampling(temperature=2.0, top_k=3)),
        ("top_p", {}, Sampling(top_p=0.9)),
    ],
)
def test_strategies_are_presets(strategy, settings, expected):
    assert Sampling.from_strategy(strategy, **settings) == expected


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Sampling.from_strategy("beam"), "strategy 'beam' is not one of greedy, temperature, top_k, top_p"),
        (lambda: Sampling.from_strategy("temperature", temperature=0), "temperature must be above 0.*--strategy greedy"),
        (lambda: Sampling.from_strategy("top_k", top_k=0), "top-k must be at least 1, got 0"),
        (lambda: Sampling.from_strategy("top_p", top_p=1.5), r"top-p must be in \(0, 1\], got 1.5"),
        (lambda: Sampling(temperature=float("nan")), "temperature must be a finite number, 0 .greedy. or above, got nan"),
        (lambda: Sampling(top_k=-1), "top-k must be at least 1"),
        (lambda: Sampling(top_p=0.0), r"top-p must be in \(0, 1\]"),
    ],
)
def test_settings_out_of_range_are_one_line_errors(make, message):
    with pytest.raises(RnnlmError, match=message):
        make()
