"""Dynamic evaluation (Krause et al. 2018, "Dynamic evaluation of neural sequence
models"): scoring a bptt-mode model's text while it goes on learning from it.

The model reads the text in order, as :func:`keras_rnnlm.evaluate.score_lanes` does.
After each step is scored, the model takes one gradient step on the tokens it has just
scored, so a name, a topic or a turn of phrase seen a few lines back is likelier next
time: ``w <- w - learning_rate * grad + decay * (w_start - w)``, the decay pulling the
weights back toward the trained ones (the paper's SGD rule). Every token is scored
before any step has learned from it, so the figure is a fair held-out one. The run's
weights are left as they were.

The two settings are fitted on validation text by a small grid (a pass each), kept in
the run folder (``dynamic.json``) by ``evaluate --fit-dynamic``; ``evaluate --dynamic``
scores with them. With ``evaluate --dynamic --cache`` the same pass also scores each
token with the continuous cache mixed in (:class:`keras_rnnlm.cache.CacheMemory`, its
states those of the model as it learns): the two gains add up, as Krause et al. report.
The cache for that mixture is fitted on the dynamic pass itself (one more pass, the
cache's whole grid at the chosen step size), as a model that learns from the text
already does part of what the cache does; a ``dynamic.json`` without one mixes in the
run's static cache.

Example:
    >>> _, without, _ = score_lanes(model, validation_lanes)   # keras_rnnlm.evaluate's
    >>> settings = fit_dynamic(model, validation_lanes, without)  # a pass per setting of the grid
    >>> cross_entropy, accuracy, _ = dynamic_scores(model, test_lanes, settings)
    >>> cross_entropy, accuracy, with_cache = dynamic_scores(model, test_lanes, settings, cache=settings.cache())
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from keras_rnnlm.backup import stateful_layers
from keras_rnnlm.cache import LAMBDAS, SIZES, THETAS, CacheMemory, best_setting
from keras_rnnlm.data import Lanes, lanes_dataset
from keras_rnnlm.model import carried_state_features
from keras_rnnlm.runs import CacheSettings, DynamicSettings

# The grid the settings are fitted on. The gradient is that of the mean cross-entropy
# of a step's tokens: the step sizes span a model trained by Adam (small steps) to one
# trained by SGD at 20 (large ones).
LEARNING_RATES = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
DECAYS = (0.0, 0.003, 0.03)


def dynamic_scores(model: keras.Model, text: Lanes, settings: DynamicSettings, attention_memory: int = 0,
                   cache: CacheSettings | None = None) -> tuple[float, float, float | None]:
    """Scores the text in order, a gradient step on each step's tokens after scoring them.

    Args:
        model: A bptt-mode model; its weights are restored when this returns.
        text: The text in lanes; padding targets count for nothing.
        settings: The step size and the decay toward the trained weights.
        attention_memory: A model with attention: outputs each lane remembers.
        cache: Also score each token with this continuous cache mixed in.

    Returns:
        (mean cross-entropy in nats per token, accuracy, the cross-entropy with the
        cache or None without one), each token scored before any step learned from it;
        the cross-entropies are inf if the steps diverged.
    """
    cache_memory = CacheMemory([cache.size], [cache.theta], [cache.lam]) if cache else None
    cross_entropy, accuracy, with_cache = _LearningReader(model, text, attention_memory, cache_memory).scores(text, settings)
    return cross_entropy, accuracy, None if with_cache is None else float(with_cache[0, 0, 0])


def fit_dynamic(model: keras.Model, valid: Lanes, without: float, attention_memory: int = 0,
                learning_rates=LEARNING_RATES, decays=DECAYS, cache_grid=(SIZES, THETAS, LAMBDAS)) -> DynamicSettings:
    """The grid's best settings on the validation text (lowest cross-entropy), a pass
    each: every step size without decay, then the decays at the best one; then the
    continuous cache's grid (``cache_grid``: sizes, thetas, lambdas; None: no cache)
    mixed into the best one's pass (one more pass). ``without``:
    the text's cross-entropy read without learning (:func:`keras_rnnlm.evaluate.score_lanes`);
    if no setting beats it, the settings say so with ``learning_rate`` 0 (off)."""
    reader = _LearningReader(model, valid, attention_memory)
    scores = {(rate, 0.0): reader.scores(valid, DynamicSettings(rate, 0.0))[0] for rate in learning_rates}
    best_rate = min(scores, key=scores.get)[0]
    for decay in decays:
        if (best_rate, decay) not in scores:
            scores[(best_rate, decay)] = reader.scores(valid, DynamicSettings(best_rate, decay))[0]
    (rate, decay), best = min(scores.items(), key=lambda item: item[1])
    if not best < without:
        return DynamicSettings(0.0, 0.0, without, without)
    if cache_grid is None:
        return DynamicSettings(rate, decay, best, without)
    _, _, grid = _LearningReader(model, valid, attention_memory, CacheMemory(*cache_grid)).scores(valid, DynamicSettings(rate, decay))
    cache = best_setting(grid, cache_grid, best)
    if not cache.valid_cross_entropy < best:
        return DynamicSettings(rate, decay, best, without)
    return DynamicSettings(rate, decay, best, without, cache.size, cache.theta, cache.lam, cache.valid_cross_entropy)


class _LearningReader:
    """``model`` reading lanes in order (:func:`~keras_rnnlm.model.carried_state_features`,
    the same weights), a step function that scores a step (and, given ``cache``, the
    cache's mixture at each of its settings) and then learns from it, and the trained
    weights to return to."""

    def __init__(self, model: keras.Model, text: Lanes, attention_memory: int, cache: CacheMemory | None = None):
        self.reader = carried_state_features(model, text.num_lanes, text.bptt_steps, attention_memory)
        self.variables = list({id(variable): variable for variable in self.reader.trainable_variables}.values())  # tied: once
        self.trained = [np.array(variable.numpy()) for variable in self.variables]
        self.starts = [tf.constant(values) for values in self.trained]
        self.cache = cache
        self.step = tf.function(self._step)  # traced once for every setting

    def _step(self, inputs, targets, weights, memory, learning_rate, decay):  # (lanes, steps) each; two float32 scalars
        with tf.GradientTape() as tape:  # the logits are the step's scores; the loss is the step's to learn
            features, logits = self.reader(inputs, training=False)  # logits (lanes, steps, vocabulary), float32
            token_cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
            cross_entropy = tf.reduce_sum(token_cross_entropy * weights)
            loss = cross_entropy / tf.maximum(tf.reduce_sum(weights), 1.0)
        with_cache, memory = (self.cache.step(features, -token_cross_entropy, targets, weights, memory)
                              if self.cache else (tf.zeros([1, 1, 1]), memory))  # memory: () without a cache
        gradients = tape.gradient(loss, self.variables)
        for variable, gradient, start in zip(self.variables, gradients, self.starts):
            gradient = tf.convert_to_tensor(gradient)  # the embedding's rows (IndexedSlices) made whole
            variable.assign(variable - learning_rate * gradient + decay * (start - variable))
        correct = tf.math.in_top_k(tf.reshape(targets, [-1]), tf.reshape(logits, [-1, logits.shape[-1]]), 1)
        return cross_entropy, tf.reduce_sum(tf.cast(correct, tf.float32) * tf.reshape(weights, [-1])), with_cache, memory

    def scores(self, text: Lanes, settings: DynamicSettings) -> tuple[float, float, np.ndarray | None]:
        """As :func:`dynamic_scores`, every lane from zero state; with the cache, its
        cross-entropy at every setting of its grid: (sizes, thetas, lambdas)."""
        for layer in stateful_layers(self.reader):
            layer.reset_states()
        learning_rate, decay = tf.constant(settings.learning_rate, tf.float32), tf.constant(settings.decay, tf.float32)
        memory = self.cache.empty(text.num_lanes, self.reader.outputs[0].shape[-1]) if self.cache else ()
        total_cross_entropy, total_correct = 0.0, 0.0
        total_with_cache = np.zeros(self.cache.shape) if self.cache else None
        try:
            for inputs, targets, weights in lanes_dataset(text):
                cross_entropy, correct, with_cache, memory = self.step(inputs, targets, weights, memory, learning_rate, decay)
                total_cross_entropy += float(cross_entropy)
                total_correct += float(correct)
                if self.cache:
                    total_with_cache += with_cache.numpy()
                if not math.isfinite(total_cross_entropy):
                    return math.inf, total_correct / text.num_targets, np.full_like(total_with_cache, math.inf) if self.cache else None
        finally:
            for variable, values in zip(self.variables, self.trained):
                variable.assign(values)
        return (total_cross_entropy / text.num_targets, total_correct / text.num_targets,
                total_with_cache / text.num_targets if self.cache else None)
