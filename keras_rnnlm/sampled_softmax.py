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
touched (:class:`SparseRowsAdam`): at a large vocabulary a dense update of every row was
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

from keras_rnnlm.speedups import FusedAdam, adam_moments, summed_rows


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


class SampledSoftmaxTrainer(keras.Model):
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
        # As Keras' compiled loss: each replica's share of the sum its optimizer takes.
        return loss / tf.distribute.get_strategy().num_replicas_in_sync

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if not _training_step.get():
            return super().compute_metrics(x, y, y_pred, sample_weight)
        return {metric.name: metric.result() for metric in self.metrics if metric.name == "loss"}  # Keras' loss tracker


class SparseRowsAdam(FusedAdam):
    """:class:`FusedAdam` that, for a sparse gradient (an ``IndexedSlices``: an
    embedding's, the sampled softmax's output rows), reads and writes only the rows it
    names, yet moves every row as dense Adam does (up to the approximation below).

    Under sampled softmax a step touches a few thousand rows of the output and embedding
    matrices; Keras' Adam would make the gradient a dense (vocabulary x units) matrix and
    pass over every row and both moments: at 200,000 tokens that was most of the step.

    Dense Adam still moves a row in the steps that do not touch it: its momentum decays
    and keeps stepping, ``b1^j m / sqrt(b2^j v)`` at the j-th step after (ten times the
    first step, summed). "Lazy" Adam (PyTorch's ``SparseAdam``, TensorFlow Addons'
    ``LazyAdam``) drops those steps, which cost WikiText-2 13% of perplexity after the
    same steps (benchmarks/RESULTS.md). Here each row remembers the step through which it
    is current (``current_through``); when a step touches it again, it first takes the
    steps it sat out, in closed form: a geometric sum ``r (1 - r^k) / (1 - r)``,
    ``r = b1 / sqrt(b2)``, of its momentum's step, and its moments decayed by ``b1^k``
    and ``b2^k``. The closed form takes Adam's epsilon outside the square root's decay
    and Adam's bias-corrected rate at the sat-out steps' weighted centre for all of them; a test holds
    the result to Keras' Adam. :meth:`catch_up` brings every row current, as the
    validation and the saved model need (:class:`~keras_rnnlm.callbacks.OutputKernel`
    calls it). Dense gradients update as :class:`FusedAdam` does.
    """

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._current_through = [
            self.add_variable((variable.shape[0],), dtype="int64", name=f"{variable.path.replace('/', '_')}_current_through")
            for variable in var_list
        ]  # (rows,): the step through which each row's weights and moments are current

    def update_step(self, gradient, variable, learning_rate):
        current_through = self._current_through[self._get_variable_index(variable)]
        step = self.iterations + 1
        if self.amsgrad or not isinstance(gradient, tf.IndexedSlices):
            current_through.assign(tf.fill(tf.shape(current_through), tf.cast(step, tf.int64)))
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        rows, summed = summed_rows(gradient)  # (touched,), (touched, units)
        momentum, velocity = adam_moments(self, variable)
        last = tf.raw_ops.ResourceGather(resource=current_through.handle, indices=rows, dtype=tf.int64)
        first, second, sat_out = self._caught_up(
            tf.raw_ops.ResourceGather(resource=momentum.handle, indices=rows, dtype=dtype),
            tf.raw_ops.ResourceGather(resource=velocity.handle, indices=rows, dtype=dtype),
            last, tf.cast(step, tf.int64) - 1, learning_rate, dtype,
        )
        # This step, as ResourceApplyAdam computes it, on the named rows only.
        beta_1, beta_2 = keras.ops.cast(self.beta_1, dtype), keras.ops.cast(self.beta_2, dtype)
        rate = self._rate(tf.cast(step, dtype), learning_rate, dtype)
        summed = tf.cast(summed, dtype)
        first = beta_1 * first + (1 - beta_1) * summed
        second = beta_2 * second + (1 - beta_2) * tf.square(summed)
        tf.raw_ops.ResourceScatterUpdate(resource=momentum.handle, indices=rows, updates=first)
        tf.raw_ops.ResourceScatterUpdate(resource=velocity.handle, indices=rows, updates=second)
        tf.raw_ops.ResourceScatterUpdate(resource=current_through.handle, indices=rows, updates=tf.fill(tf.shape(rows), tf.cast(step, tf.int64)))
        step_size = sat_out + rate * first / (tf.sqrt(second) + keras.ops.cast(self.epsilon, dtype))
        tf.raw_ops.ResourceScatterSub(resource=variable.handle, indices=rows, updates=step_size)

    def catch_up(self) -> None:
        """Brings every row of every weight current to the last step taken: each takes the
        steps it sat out (a pass over every row, which a training step avoids)."""
        done = tf.cast(self.iterations, tf.int64)
        for variable, current_through in zip(self._trainable_variables, self._current_through):
            momentum, velocity = adam_moments(self, variable)
            first, second, sat_out = self._caught_up(
                momentum.value, velocity.value, current_through.value, done, self.learning_rate, variable.dtype)
            momentum.assign(first)
            velocity.assign(second)
            variable.assign(variable.value - sat_out)
            current_through.assign(tf.fill(tf.shape(current_through), done))

    def _caught_up(self, first, second, last, done, learning_rate, dtype):
        """Rows' moments after the steps ``last + 1 .. done`` that did not touch them, and
        the weights' change in those steps (to subtract): dense Adam's, with a zero gradient.

        Args:
            first, second: (rows, ...) the rows' moments, current through ``last``.
            last: (rows,) int64.
            done: The last step taken, int64.
        """
        beta_1, beta_2 = keras.ops.cast(self.beta_1, dtype), keras.ops.cast(self.beta_2, dtype)
        shape = tf.concat([tf.shape(last), tf.ones([tf.rank(first) - 1], tf.int32)], axis=0)
        missed = tf.reshape(tf.cast(done - last, dtype), shape)  # (rows, 1...): steps sat out
        ratio = beta_1 / tf.sqrt(beta_2)  # each sat-out step is this times the one before
        steps = ratio * (1 - ratio**missed) / (1 - ratio)  # the sat-out steps' sum, in units of the first
        # Adam's rate changes (its bias correction) over the steps sat out: it is taken at
        # their centre, weighted as they are (about 1 / (1 - ratio) = 10 steps on).
        centre = tf.maximum(1.0, tf.math.divide_no_nan(  # 1 where none were sat out
            1 - (missed + 1) * ratio**missed + missed * ratio ** (missed + 1), (1 - ratio) * (1 - ratio**missed)))
        rate = self._rate(tf.reshape(tf.cast(last, dtype), shape) + centre, learning_rate, dtype)
        sat_out = rate * steps * first / (tf.sqrt(second) + keras.ops.cast(self.epsilon, dtype))
        return beta_1**missed * first, beta_2**missed * second, sat_out

    def _rate(self, step, learning_rate, dtype):
        """Adam's bias-corrected step size at ``step`` (1 the first)."""
        beta_1, beta_2 = keras.ops.cast(self.beta_1, dtype), keras.ops.cast(self.beta_2, dtype)
        return keras.ops.cast(learning_rate, dtype) * tf.sqrt(1 - beta_2**step) / (1 - beta_1**step)
