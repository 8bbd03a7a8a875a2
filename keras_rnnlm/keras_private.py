"""Every reach into Keras' and KerasTuner's private attributes, each behind one name here.

Keras has no public way to what these do. Each says what it reads and why;
``tests/test_keras_private.py`` fails loudly when a Keras or KerasTuner release changes
one of them, so that an upgrade breaks a test, not a run. Read in Keras 3.15 and
KerasTuner 1.4.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell


def optimizer_slot(optimizer: keras.optimizers.Optimizer, variable) -> int | None:
    """The index of ``variable`` among the variables ``optimizer`` trains (the index of
    its moments, for Adam), or None if it trains no such variable."""
    try:
        return optimizer._get_variable_index(variable)
    except KeyError:
        return None


def adam_moments(optimizer: keras.optimizers.Adam, variable) -> tuple[keras.Variable, keras.Variable] | None:
    """The first and second moment variables Keras' Adam keeps for ``variable``, or None
    if it keeps none (``variable`` is not among those it trains)."""
    slot = optimizer_slot(optimizer, variable)
    return None if slot is None else (optimizer._momentums[slot], optimizer._velocities[slot])


def trained_variables(optimizer: keras.optimizers.Optimizer) -> list:
    """The variables ``optimizer`` was built for, in its slots' order."""
    return list(optimizer._trainable_variables)


class GradientClippingHook:
    """Mixed into a Keras optimizer: its ``clipped_gradients(grads)`` replaces Keras' own
    clipping (``_clip_gradients``, which ``apply`` calls before every update, and which
    clips if ``clipnorm``, ``clipvalue`` or ``global_clipnorm`` is set)."""

    def _clip_gradients(self, grads):
        return self.clipped_gradients(grads)

    def clipped_gradients(self, grads):
        """Keras' own clipping; override to clip otherwise."""
        return super()._clip_gradients(grads)


class PerCallMasks(DropoutRNNCell):
    """Mixed into a recurrent cell: ``keras.layers.RNN`` draws the cell's dropout masks
    once before its loop over the positions (``get_dropout_mask``,
    ``get_recurrent_dropout_mask``) and clears them after, for a cell of this class
    (Keras' ``DropoutRNNCell``, which its own cells mix in but does not export). The cell
    sets ``dropout``, ``recurrent_dropout`` and ``seed_generator``."""


class FitAcrossWorkers:
    """Mixed into a Keras model: ``fit`` and ``evaluate`` run under
    ``MultiWorkerMirroredStrategy`` too, with a dataset each worker distributes itself
    (``strategy.distribute_datasets_from_function``).

    Keras 3's ``fit`` fails there in two places (keras-team/keras issue 20585), and each
    is overridden here, for that strategy only:

    - Before the first step, ``_maybe_symbolic_build`` reduces a distributed batch to one
      eagerly (``strategy.reduce("MEAN", batch)``), which fails on the ``PerReplica``
      values of a multi-worker batch. Here the model is built from the first replica's
      part of that batch (``experimental_local_results``): the build needs only its
      shapes and dtypes.
    - The compiled step averages its scalar logs over the replicas with
      ``strategy.reduce("MEAN", value, axis=0)``, and a scalar has no axis 0. Here the
      step's logs each get an axis of one, which that reduction then averages away:
      every log is the mean over the replicas, as on one machine.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self.distribute_strategy
        if not across_workers(strategy) or iterator is None:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            first = tf.nest.map_structure(lambda value: strategy.experimental_local_results(value)[0], next(batches))
            break
        with strategy.scope():
            self._symbolic_build(data_batch=first)

    def train_step(self, data):
        return self._replica_logs(super().train_step(data))

    def test_step(self, data):
        return self._replica_logs(super().test_step(data))

    def _replica_logs(self, logs: dict) -> dict:
        if not across_workers(self.distribute_strategy):
            return logs
        return {name: tf.reshape(value, [1]) for name, value in logs.items()}


def across_workers(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` spans several workers (a ``MultiWorkerMirroredStrategy`` of a
    cluster), where :class:`FitAcrossWorkers` changes ``fit``."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return len(strategy.cluster_resolver.cluster_spec().as_dict().get("worker", ())) > 1


@contextlib.contextmanager
def keras_tuner_tracebacks_off() -> Iterator[None]:
    """KerasTuner prints the traceback of every failed trial while its module-level
    ``DEBUG`` flag is on (the default; it has no public setter). A failed trial here is a
    combination of values the config refuses, which the search logs in one line, so the
    flag is off for the block."""
    from keras_tuner.src import config as keras_tuner_config

    kept = keras_tuner_config.DEBUG
    keras_tuner_config.DEBUG = False
    try:
        yield
    finally:
        keras_tuner_config.DEBUG = kept
