"""A continuous cache (Grave et al. 2016, "Improving neural language models with a
continuous cache"): scoring a bptt-mode model's text with a memory of what it just read.

While the model reads a text in order, the cache keeps its last ``size`` hidden states
(the output of the last recurrent layer, which the output layer reads) and, beside each,
the token that followed it. At every token it makes a second distribution: each
remembered state votes for the token that followed it, with weight
``exp(theta * <state now, state then>)``. The two are mixed,
``p = (1 - lambda) * p_model + lambda * p_cache``: a word used a few lines back is likely
again (a name, a topic). Nothing is trained: ``size``, ``theta`` and ``lambda`` are
fitted on validation text by a small grid, as the paper does, at the end of a bptt run
(kept in the run folder's ``cache.json``) or by ``evaluate --fit-cache``, and
``evaluate --cache`` scores with them.

Each lane keeps its own memory, empty at the lane's start (as its state is zero); a
token with nothing in memory yet is scored by the model alone.

Generation can use it too (:func:`keras_rnnlm.inference.cached_steps`, held equal to
this module's scoring by a test): the prompt and the text written so far fill the
memory, and each token is drawn from the mixture.

Example:
    >>> settings = fit_cache(model, validation_lanes)   # one pass, every setting of the grid
    >>> without, with_cache, accuracy = cache_scores(model, test_lanes, settings)
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from keras_rnnlm.data import Lanes, lanes_dataset
from keras_rnnlm.model import carried_state_features
from keras_rnnlm.runs import CacheSettings

# The grid the settings are fitted on: the paper's sizes and the range of theta and
# lambda its figures and gluon-nlp's fitted values fall in.
SIZES = (100, 500, 2000)
THETAS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0)
LAMBDAS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)


def cache_cross_entropies(
    model: keras.Model, text: Lanes, sizes=SIZES, thetas=THETAS, lambdas=LAMBDAS, attention_memory: int = 0
) -> tuple[float, np.ndarray]:
    """Scores the text in order (as :func:`keras_rnnlm.evaluate.score_lanes`), without
    the cache and with it at every combination of the settings given, in one pass.

    Args:
        model: A bptt-mode model.
        text: The text in lanes.
        sizes, thetas, lambdas: The settings to score.
        attention_memory: A model with attention: outputs each lane remembers.

    Returns:
        (mean cross-entropy without the cache, the mean cross-entropies with it: an
        array of shape (sizes, thetas, lambdas)), in nats per token.
    """
    without, _, grid = _read_in_order(model, text, sizes, thetas, lambdas, attention_memory)
    return without, grid


class CacheMemory:
    """The cache's arithmetic for one grid of settings, a step of lanes at a time: the
    mixture's cross-entropy at every setting and the memory carried to the next step.
    Scoring with fixed weights (:func:`cache_cross_entropies`) and while the model learns
    (:mod:`keras_rnnlm.dynamic`) both read through it."""

    def __init__(self, sizes, thetas, lambdas):
        self.sizes = tuple(sizes)
        self.shape = (len(sizes), len(thetas), len(lambdas))  # of a step's cross-entropies, one per setting
        self.memory_size = max(self.sizes)
        self.size_limits = tf.constant(self.sizes, tf.int32)
        self.thetas = tf.constant(thetas, tf.float32)
        self.log_lambdas = tf.math.log(tf.constant(lambdas, tf.float32))
        self.log_rest = tf.math.log1p(-tf.constant(lambdas, tf.float32))

    def empty(self, lanes: int, units: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Every lane's memory, empty: (states, the tokens that followed them, filled)."""
        return (tf.zeros([lanes, self.memory_size, units]), tf.zeros([lanes, self.memory_size], tf.int32),
                tf.zeros([lanes, self.memory_size], tf.bool))

    def step(self, features, log_model, targets, weights, memory):
        """Mixes the cache into a step's scores (inside a ``tf.function``).

        Args:
            features: (lanes, steps, units) the states the output layer read.
            log_model: (lanes, steps) the model's log-probability of each target.
            targets, weights: (lanes, steps) the tokens and whether each counts.
            memory: As :meth:`empty`, from the step before.

        Returns:
            (the summed cross-entropy with the cache at every setting: shape (sizes,
            thetas, lambdas), the memory for the next step).
        """
        keys, ids, filled = memory
        features = tf.cast(features, tf.float32)
        keys = tf.concat([keys, features], axis=1)  # (lanes, memory + steps, units): the state...
        ids = tf.concat([ids, targets], axis=1)  # ...and the token that followed it
        filled = tf.concat([filled, weights > 0], axis=1)
        steps = tf.shape(targets)[1]
        query = tf.range(steps)[:, None] + self.memory_size  # a query's own index among the keys
        key = tf.range(self.memory_size + steps)[None, :]
        age = query - key  # 1 for the state just before: only states whose next token is known
        scores = tf.einsum("lsu,lku->lsk", features, keys)  # (lanes, steps, keys)
        votes = tf.equal(ids[:, None, :], targets[:, :, None])  # the key's next token is the target
        by_size = []
        for index in range(len(self.sizes)):
            usable = (age >= 1) & (age <= self.size_limits[index])  # (steps, keys)
            usable = usable[None] & filled[:, None, :]  # (lanes, steps, keys)
            by_theta = []
            for theta_index in range(self.thetas.shape[0]):
                scaled = tf.where(usable, self.thetas[theta_index] * scores, -math.inf)
                normalizer = tf.reduce_logsumexp(scaled, axis=-1)  # -inf: nothing remembered yet
                log_cache = tf.reduce_logsumexp(tf.where(votes, scaled, -math.inf), axis=-1) - normalizer
                mixed = tf.reduce_logsumexp(tf.stack([self.log_rest[:, None, None] + log_model,
                                                      self.log_lambdas[:, None, None] + log_cache]), axis=0)
                # (lambdas, lanes, steps); an empty memory leaves the model alone
                mixed = tf.where(tf.math.is_finite(normalizer)[None], mixed, log_model[None])
                by_theta.append(-tf.reduce_sum(mixed * weights[None], axis=[1, 2]))
            by_size.append(tf.stack(by_theta))
        memory = keys[:, -self.memory_size:], ids[:, -self.memory_size:], filled[:, -self.memory_size:]
        return tf.stack(by_size), memory


def _read_in_order(model, text: Lanes, sizes, thetas, lambdas, attention_memory: int) -> tuple[float, float, np.ndarray]:
    """:func:`cache_cross_entropies`, and the model's accuracy without the cache."""
    features_model = carried_state_features(model, text.num_lanes, text.bptt_steps, attention_memory)
    cache = CacheMemory(sizes, thetas, lambdas)

    @tf.function
    def step(inputs, targets, weights, memory):
        features, logits = features_model(inputs, training=False)
        log_model = -tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)  # (lanes, steps)
        correct = tf.math.in_top_k(tf.reshape(targets, [-1]), tf.reshape(logits, [-1, logits.shape[-1]]), 1)
        with_cache, memory = cache.step(features, log_model, targets, weights, memory)
        return (-tf.reduce_sum(log_model * weights), tf.reduce_sum(tf.cast(correct, tf.float32) * tf.reshape(weights, [-1])),
                with_cache, memory)

    memory = cache.empty(text.num_lanes, features_model.outputs[0].shape[-1])
    without, correct, with_cache = 0.0, 0.0, np.zeros(cache.shape)
    for inputs, targets, weights in lanes_dataset(text):
        plain, right, cached, memory = step(inputs, targets, weights, memory)
        without += float(plain)
        correct += float(right)
        with_cache += cached.numpy()
    return without / text.num_targets, correct / text.num_targets, with_cache / text.num_targets


def fit_cache(model: keras.Model, valid: Lanes, attention_memory: int = 0) -> CacheSettings:
    """The grid's best settings on the validation text (lowest cross-entropy); lambda 0
    (the cache off) if none of them scores better than the model alone. A model with
    attention: ``attention_memory`` outputs remembered per lane."""
    without, grid = cache_cross_entropies(model, valid, attention_memory=attention_memory)
    best = best_setting(grid, (SIZES, THETAS, LAMBDAS), without)
    if best.valid_cross_entropy >= without:
        return CacheSettings(best.size, best.theta, 0.0, without, without)
    return best


def best_setting(grid: np.ndarray, settings, without: float) -> CacheSettings:
    """The setting of ``settings`` (sizes, thetas, lambdas) whose cross-entropy in ``grid``
    (as :func:`cache_cross_entropies` gives it) is lowest; ``without``: the text's
    cross-entropy without the cache."""
    best = np.unravel_index(np.argmin(grid), grid.shape)
    size, theta, lam = (values[index] for values, index in zip(settings, best))
    return CacheSettings(int(size), float(theta), float(lam), float(grid[best]), without)


def cache_scores(model: keras.Model, text: Lanes, settings: CacheSettings, attention_memory: int = 0) -> tuple[float, float, float]:
    """(cross-entropy without the cache, with it, in nats per token; accuracy without
    it), from one pass over the text. A model with attention: ``attention_memory``
    outputs remembered per lane."""
    without, accuracy, grid = _read_in_order(model, text, (settings.size,), (settings.theta,), (settings.lam,),
                                             attention_memory)
    return without, float(grid[0, 0, 0]), accuracy


