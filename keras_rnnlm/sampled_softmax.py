"""Sampled softmax: training a large vocabulary's output layer on a sample of it.

The full softmax multiplies every target's features by the whole output matrix,
(units x vocabulary) multiply-adds a target, which at tens of thousands of tokens is most
of a training step. Sampled softmax (Jean et al. 2015) computes the logits of the target
and of ``candidates`` other tokens only, drawn from a log-uniform (Zipf) distribution,
each logit lowered by the log of its expected count in the sample so that frequent
tokens are not over-counted (``tf.nn.sampled_softmax_loss`` does this and the rest).

Only training samples. :class:`SampledSoftmaxTrainer` computes the full softmax whenever
it is called outside training (validation, and so early stopping and the best
checkpoint), and the saved model is the stock one, so every perplexity reported is a
real one. Its training loss is the sampled loss: an estimate whose gradient approaches
the full softmax's as the sample grows, not the full cross-entropy (it reads lower).

Adam reads and writes only the rows of the output and embedding matrices that a step
touched (:class:`~keras_rnnlm.optimizers.SparseRowsAdam`): at a large vocabulary a dense update of every row was
most of a sampled step. A row takes the steps it sat out when it is next touched, so the
weights follow dense Adam's.

The candidates are drawn without replacement by the Gumbel-top-k trick, from a seed made
of the run's seed and the optimizer's step count, so a run resumed at any step draws what
the uninterrupted run drew (TensorFlow's candidate samplers keep a hidden state that a
backup cannot hold). The expected counts are those of TensorFlow's own unique sampler:
``1 - (1 - p)^n``, ``n`` the draws that give ``candidates`` distinct tokens on average.
"""

from __future__ import annotations

import contextvars

import keras
import numpy as np
import tensorflow as tf

from keras_rnnlm.keras_private import FitAcrossWorkers
from keras_rnnlm.regularization import PENALTIES


class LogUniformCandidates:
    """Draws ``candidates`` distinct token ids from the log-uniform distribution over
    ``vocabulary_size`` ids, ``P(k) = log((k + 2) / (k + 1)) / log(vocabulary_size + 1)``:
    Zipf's law, for ids in decreasing order of frequency (as the vocabulary numbers them).

    Args:
        vocabulary_size: Ids to draw from.
        candidates: Ids drawn each step, at most ``vocabulary_size``.
    """

    def __init__(self, vocabulary_size: int, candidates: int):
        if not 1 <= candidates <= vocabulary_size:
            raise ValueError(f"candidates must be between 1 and the vocabulary size {vocabulary_size}, got {candidates}")
        self.vocabulary_size, self.candidates = vocabulary_size, candidates
        ids = np.arange(vocabulary_size, dtype=np.float64)
        probabilities = np.log1p(1.0 / (ids + 1.0)) / np.log(vocabulary_size + 1.0)
        self.log_probabilities = tf.constant(np.log(probabilities), tf.float32)
        self.expected_counts = tf.constant(_expected_counts(probabilities, candidates), tf.float32)

    def __call__(self, targets: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The ``sampled_values`` of ``tf.nn.sampled_softmax_loss``: the drawn ids
        (candidates,), each target's expected count (targets, 1) and each drawn id's
        (candidates,).

        Args:
            targets: (targets,) int ids.
            seed: (2,) int64, the stateless random seed.
        """
        uniform = tf.random.stateless_uniform([self.vocabulary_size], seed, minval=1e-20, maxval=1.0)
        gumbel = -tf.math.log(-tf.math.log(uniform))
        _, drawn = tf.math.top_k(self.log_probabilities + gumbel, k=self.candidates, sorted=False)
        return (
            tf.cast(drawn, tf.int64),
            tf.gather(self.expected_counts, tf.cast(targets, tf.int32))[:, tf.newaxis],
            tf.gather(self.expected_counts, drawn),
        )


def _expected_counts(probabilities: np.ndarray, candidates: int) -> np.ndarray:
    """``1 - (1 - p)^n`` for the ``n`` at which ``n`` draws with replacement give
    ``candidates`` distinct ids on average (found by bisection); all ones when every id
    is drawn."""
    if candidates >= len(probabilities):
        return np.ones_like(probabilities)
    log_miss = np.log1p(-probabilities)

    def distinct(draws):
        return float(np.sum(-np.expm1(draws * log_miss)))

    low, high = float(candidates), float(candidates)
    while distinct(high) < candidates:
        high *= 2.0
    for _ in range(100):
        middle = (low + high) / 2.0
        low, high = (middle, high) if distinct(middle) < candidates else (low, middle)
    return -np.expm1(high * log_miss)


def sampled_cross_entropy(
    weights: tf.Tensor, biases: tf.Tensor, targets: tf.Tensor, features: tf.Tensor,
    sampler: LogUniformCandidates, seed: tf.Tensor,
) -> tf.Tensor:
    """The sampled-softmax loss of each target, in float32.

    Args:
        weights: (vocabulary, units): the output layer's kernel, one row a token.
        biases: (vocabulary,).
        targets: (targets,) int ids.
        features: (targets, units): what the output layer reads.
        sampler: Draws the candidates.
        seed: (2,) int64: the same seed, the same candidates.

    Returns:
        (targets,) losses.
    """
    return tf.nn.sampled_softmax_loss(
        weights=tf.cast(weights, tf.float32), biases=tf.cast(biases, tf.float32),
        labels=tf.cast(targets, tf.int64)[:, tf.newaxis], inputs=tf.cast(features, tf.float32),
        num_sampled=sampler.candidates, num_classes=sampler.vocabulary_size,
        sampled_values=sampler(targets, seed), remove_accidental_hits=True,
    )


# Whether this thread is tracing a training step. Under MirroredStrategy each replica's
# step is traced in a thread of its own, at the same time: an attribute of the model
# would be set and cleared by one replica while another reads it.
_training_step = contextvars.ContextVar("training_step", default=False)


class SampledSoftmaxTrainer(FitAcrossWorkers, keras.Model):
    """A training model whose training steps compute the sampled softmax, and whose every
    other call (validation, prediction) the full one.

    It holds the stock model's layers (the same variables, but for the output kernel,
    which it trains as rows of its own) in two parts: ``features``, the model up to the
    output layer, and ``output`` (its kernel one row a token), followed by ``logits``.
    Keras' own ``train_step`` runs it: called in a training step it returns the
    features, which :meth:`compute_loss` turns into the sampled loss; the accuracy
    metrics, which need every logit, are left out of the training logs (they stay in
    validation's).

    Args:
        features: A model from the token ids to the output layer's input.
        output: The output layer, a :class:`~keras_rnnlm.model.RowsOutput`: the sampled
            loss reads its ``rows`` and ``bias``.
        logits: The float32 layer after ``output``.
        candidates: Tokens sampled per step, besides the targets.
        seed: The run's seed.
    """

    def __init__(self, features: keras.Model, output: keras.layers.Layer, logits: keras.layers.Layer,
                 candidates: int, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.features, self.output_layer, self.logits = features, output, logits
        self.sampler = LogUniformCandidates(output.rows.shape[0], candidates)
        self.seed = seed
        self.built = True  # its parts hold their variables: the stock model's layers, and the output's rows

    def call(self, inputs, training=False):
        features = self.features(inputs, training=training)
        if _training_step.get():
            return features
        return self.logits(self.output_layer(features))

    def train_step(self, data):
        token = _training_step.set(True)  # read while the step is traced, once
        try:
            return super().train_step(data)
        finally:
            _training_step.reset(token)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not _training_step.get():
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        features = tf.reshape(y_pred, [-1, y_pred.shape[-1]])  # (targets, units), in bptt mode every position
        targets = tf.reshape(y, [-1])
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])
        losses = sampled_cross_entropy(self.output_layer.rows, self.output_layer.bias, targets, features, self.sampler, seed)
        if sample_weight is None:
            loss = tf.reduce_mean(losses)
        else:  # as the full loss: the mean over the targets' weights (padding weighs 0)
            weights = tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
            loss = tf.math.divide_no_nan(tf.reduce_sum(losses * weights), tf.reduce_sum(weights))
        if self.losses:  # the activation penalties of keras_rnnlm.regularization, as Keras' compute_loss adds them
            loss += tf.add_n([tf.cast(penalty, tf.float32) for penalty in self.losses])
        # As Keras' compiled loss: each replica's share of the sum its optimizer takes.
        return loss / tf.distribute.get_strategy().num_replicas_in_sync

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if not _training_step.get():
            return super().compute_metrics(x, y, y_pred, sample_weight)
        # Keras' loss tracker, and the penalties' metrics
        return {metric.name: metric.result() for metric in self.metrics if metric.name in ("loss", *PENALTIES)}

    def get_metrics_result(self):
        """As Keras', without the accuracy metrics while nothing has built them: training
        steps update only the loss (without a distribution strategy Keras builds metrics
        at their first update, and validation's is the first)."""
        results = {}
        for metric in self.metrics:
            if getattr(metric, "built", True):  # the compiled metrics' container builds at its first update
                result = metric.result()
                results.update(result if isinstance(result, dict) else {metric.name: result})
        return results
