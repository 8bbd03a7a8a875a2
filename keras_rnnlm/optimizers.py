"""How the weights are updated: the optimizers training uses, and the stock ones saved.

``model.keras`` keeps Keras' own Adam or SGD (:func:`stock_optimizer`); training updates
the same weights with these, chosen in :func:`training_optimizer`:

- :class:`FusedAdam`, a measured speed path: Keras' Adam, each weight updated by
  TensorFlow's one-kernel ``ResourceApplyAdam`` (``tests/test_optimizers.py`` holds the
  two equal; ``benchmarks/train_breakdown.py`` times them).
- :class:`SparseRowsAdam`, for sampled softmax: Adam that reads and writes only the rows
  of a sparse gradient, yet moves every row as dense Adam does.
- :func:`with_summed_gradient_clipping`: clipping by the norm of the gradient the update
  applies, summed over replicas and over repeated rows (Keras measures each replica's and
  each slice's), so that one worker and two train the same weights.

:func:`copy_optimizer_state` carries the training optimizer's state over to the stock
one before ``model.keras`` is saved.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_rnnlm.config import TrainConfig
from keras_rnnlm.keras_private import GradientClippingHook, adam_moments, optimizer_slot, trained_variables


def stock_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """Keras' Adam or SGD as configured, clipping gradients by their global norm unless
    ``clipnorm`` is 0: what ``model.keras`` keeps."""
    return _optimizer(config, keras.optimizers.Adam, keras.optimizers.SGD)


def training_optimizer(config: TrainConfig, sparse_rows: bool = False) -> keras.optimizers.Optimizer:
    """The optimizer that trains: :class:`FusedAdam` (or, with ``sparse_rows``,
    :class:`SparseRowsAdam`) or SGD, each clipping the summed gradient
    (:func:`with_summed_gradient_clipping`), and keeping a moving average of the weights
    if ``weight_averaging`` asks (:class:`~keras_rnnlm.callbacks.AveragedWeights` uses it).
    Stock: :func:`stock_optimizer`."""
    adam = SparseRowsAdam if sparse_rows else FusedAdam
    return _optimizer(config, with_summed_gradient_clipping(adam), with_summed_gradient_clipping(keras.optimizers.SGD),
                      averaging=True)


def _optimizer(config: TrainConfig, adam: type, sgd: type, averaging: bool = False) -> keras.optimizers.Optimizer:
    options = {"global_clipnorm": config.clipnorm} if config.clipnorm > 0 else {}
    if averaging and config.weight_averaging:  # Keras' own moving average of the weights, kept by the optimizer
        options.update(use_ema=True, ema_momentum=config.weight_averaging)
    if config.optimizer == "adam":
        return adam(config.learning_rate, **options)
    return sgd(config.learning_rate, **options)


class FusedAdam(keras.optimizers.Adam):
    """Keras' Adam, each weight updated by TensorFlow's fused Adam kernel.

    Keras 3's Adam updates a weight with about ten element-wise ops, each a pass over the
    weight or its moments; ``ResourceApplyAdam`` (which tf.keras used) makes one. The
    arithmetic is Keras' own (a test holds the two equal), its variables are Adam's, the
    kernel exists for CPU and GPU, and under a ``tf.distribute`` strategy it runs on each
    replica's copy as Keras' update does.

    One difference: where an Embedding's sparse gradient lists a row twice (a token twice
    in a batch), the second moment takes the square of the row's summed gradient, as
    Adam defines it (and tf.keras' and PyTorch's Adam compute it); Keras 3's Adam sums
    the squares of the two slices.
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = keras.ops.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = keras.ops.cast(self.beta_1, dtype), keras.ops.cast(self.beta_2, dtype)
        momentum, velocity = adam_moments(self, variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=momentum.handle,
            v=velocity.handle,
            beta1_power=keras.ops.power(beta_1, step),
            beta2_power=keras.ops.power(beta_2, step),
            lr=keras.ops.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=keras.ops.cast(self.epsilon, dtype),
            grad=tf.cast(tf.convert_to_tensor(gradient), dtype),  # an Embedding's sparse gradient made dense, as Keras' Adam does
        )


def summed_rows(gradient: tf.IndexedSlices) -> tuple[tf.Tensor, tf.Tensor]:
    """A sparse gradient's rows, each once, and their slices summed: a row listed twice (a
    token twice in a batch) is one row of the gradient the update applies."""
    rows, position = tf.unique(gradient.indices)
    return rows, tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(rows)[0])


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
        current_through = self._current_through[optimizer_slot(self, variable)]
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
        for variable, current_through in zip(trained_variables(self), self._current_through):
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


def with_summed_gradient_clipping(optimizer_class: type[keras.optimizers.Optimizer]) -> type[keras.optimizers.Optimizer]:
    """``optimizer_class`` whose ``global_clipnorm`` clips by the norm of the gradient the
    update applies: summed over the replicas, and over the repeated rows of a sparse one.

    Keras 3 measures something else in two ways (read in Keras 3.15). It clips each
    replica's own gradient before their sum, so two workers with clipping on trained other
    weights than one worker with the same batch. And it measures a sparse gradient (an
    ``IndexedSlices``: the embedding's, the sampled softmax's) by its slices, so a row
    listed twice (a token twice in a batch) counts as two rows of half the size: a norm of
    sqrt(2) where the applied gradient's is 2, which also made one worker and two differ
    under sampled softmax. So this sums the gradients over the replicas itself (an
    all-reduce; a second one follows in Keras), measures the sum with repeated rows added
    up, scales it as Keras would (``clip_norm / max(norm, clip_norm)``), and hands each
    replica its share. Keras calls it through :class:`~keras_rnnlm.keras_private.GradientClippingHook`.
    """

    class SummedGradientClipping(GradientClippingHook, optimizer_class):
        def clipped_gradients(self, grads):
            if not self.global_clipnorm:
                return super().clipped_gradients(grads)
            context = tf.distribute.get_replica_context()
            replicas = context.num_replicas_in_sync if context is not None else 1
            summed = context.all_reduce(tf.distribute.ReduceOp.SUM, grads) if replicas > 1 else grads
            norm = tf.sqrt(tf.add_n([_squared_norm(gradient) for gradient in summed if gradient is not None]))
            clip = tf.cast(self.global_clipnorm, norm.dtype)
            scale = clip * tf.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)  # as Keras: NaN stays NaN
            return [None if gradient is None else _scaled(gradient, scale / replicas) for gradient in summed]

    SummedGradientClipping.__name__ = SummedGradientClipping.__qualname__ = optimizer_class.__name__
    return SummedGradientClipping


def _squared_norm(gradient) -> tf.Tensor:
    """The squared norm of a dense gradient, or of a sparse one with its repeated rows added up."""
    if isinstance(gradient, tf.IndexedSlices):
        _, merged = summed_rows(gradient)
        return tf.reduce_sum(tf.square(tf.cast(merged, tf.float32)))
    return tf.reduce_sum(tf.square(tf.cast(gradient, tf.float32)))


def _scaled(gradient, factor):
    """A dense or sparse (``IndexedSlices``) gradient times ``factor``."""
    factor = tf.cast(factor, gradient.dtype)
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values * factor, gradient.indices, gradient.dense_shape)
    return gradient * factor


def copy_optimizer_state(source: keras.optimizers.Optimizer, target: keras.optimizers.Optimizer, variables) -> None:
    """Copies the training optimizer's state into the stock one that ``model.keras`` keeps:
    the step count, the learning rate and, between two Adams (:class:`FusedAdam` is one),
    the moments of each of ``variables`` that both train. A variable only the target
    trains (the output kernel, when the embeddings are tied) keeps zero moments.
    """
    source, target = (getattr(optimizer, "inner_optimizer", optimizer) for optimizer in (source, target))  # loss scaling
    target.iterations.assign(source.iterations)
    target.learning_rate = float(keras.ops.convert_to_numpy(source.learning_rate))
    if isinstance(source, keras.optimizers.Adam) and isinstance(target, keras.optimizers.Adam):
        for variable in variables:
            moments, copies = adam_moments(source, variable), adam_moments(target, variable)
            if moments is not None and copies is not None:
                for moment, copy in zip(moments, copies):
                    copy.assign(moment)
