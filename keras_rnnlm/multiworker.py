"""Training across machines: TensorFlow's ``MultiWorkerMirroredStrategy`` (collective
all-reduce over gRPC), joined from ``TF_CONFIG``.

``TF_CONFIG`` is TensorFlow's standard variable: the cluster's worker addresses and this
process' index among them, set by any launcher (Kubernetes / Kubeflow TFJob, Slurm
scripts, Ray's TensorflowTrainer, ``python -m keras_rnnlm.launch``, or by hand). Worker 0
is the chief: it alone writes the run folder.

Keras 3's ``fit`` does not run under this strategy (keras-team/keras issue 20585). Read in
Keras 3.15's TensorFlow trainer and run here: ``fit`` first reduces a distributed sample
batch eagerly (the ``PerReplica`` conversion error), and its train function then averages
the scalar logs with ``strategy.reduce("MEAN", value, axis=0)``, which fails on a scalar.
So a run across workers trains through :func:`fit_across_workers`: Keras' own
``train_step`` and ``test_step``, run on every worker with ``strategy.run``, the logs
averaged over no axis, driving the same Keras callbacks through a ``CallbackList``, as
``fit`` would. A run on one machine keeps ``model.fit``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from keras_rnnlm.data import worker_share
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.speedups import summed_rows


def cluster_workers() -> list[str]:
    """The worker addresses ``TF_CONFIG`` names, or [] when it is unset (one machine).

    Raises:
        RnnlmError: ``TF_CONFIG`` is not JSON, names no workers, or gives this task a type
            other than "worker" or an index outside the list.
    """
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        return []
    try:
        config = json.loads(text)
        workers = list(config["cluster"]["worker"])
        task = config["task"]
        kind, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError):
        raise RnnlmError(
            'TF_CONFIG is not a cluster description; it must be JSON like {"cluster": {"worker": ["host:port", ...]}, '
            '"task": {"type": "worker", "index": 0}}'
        ) from None
    if kind != "worker" or not 0 <= index < len(workers):
        raise RnnlmError(
            f"TF_CONFIG gives this task type {kind!r} and index {index}, but the cluster has workers 0 to {len(workers) - 1} "
            "only; set task to one of them"
        )
    return workers


# Seconds a worker waits for the others to join, from the environment: like TF_CONFIG, a
# setting of the cluster, not of the run.
JOIN_TIMEOUT_VARIABLE = "KERAS_RNNLM_JOIN_TIMEOUT"
DEFAULT_JOIN_TIMEOUT = 300.0
# Sleeps, then writes its message and kills the worker: argv = pid, seconds, message.
_WATCHDOG = ("import os, signal, sys, time; time.sleep(float(sys.argv[2])); sys.stderr.write(sys.argv[3] + '\\n'); "
             "sys.stderr.flush(); os.kill(int(sys.argv[1]), signal.SIGKILL)")


def join_cluster(workers: list[str]) -> tf.distribute.Strategy:
    """Creates the ``MultiWorkerMirroredStrategy``, which waits until every worker has
    joined, at most :data:`JOIN_TIMEOUT_VARIABLE` seconds (300 by default).

    TensorFlow's own wait has no bound, holds the interpreter (no Python thread runs,
    so a timeout in this process cannot fire) and ignores SIGTERM. So a watchdog process
    is started first: if the strategy is not there in time, it writes one line past the
    command's stderr filter and kills this worker; otherwise it is stopped.

    No timeout is set on the collective operations: with one
    (``CommunicationOptions(timeout_seconds=...)``), TensorFlow 2.21 left a
    "collective_ops" thread behind at every all-reduce, thousands an epoch, until a
    worker aborted. A worker that dies is still noticed, by TensorFlow's heartbeats.

    Raises:
        RnnlmError: This worker's server could not start (its port in use, say).
    """
    from keras_rnnlm.cli import unfiltered_stderr

    index, timeout = worker_index(), float(os.environ.get(JOIN_TIMEOUT_VARIABLE, DEFAULT_JOIN_TIMEOUT))
    message = (f"error: worker {index} waited {timeout:g} s for the other workers ({', '.join(workers)}) and not all came; "
               f"start every worker with the same TF_CONFIG cluster, check the addresses and the network, or set "
               f"{JOIN_TIMEOUT_VARIABLE} to wait longer")
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(timeout), message],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=unfiltered_stderr())
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (tf.errors.OpError, RuntimeError, ValueError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise RnnlmError(f"worker {index} could not start its server at {workers[index]} ({first_line}); "
                         "is that port in use? give free ports in TF_CONFIG") from None
    finally:
        watchdog.kill()
        watchdog.wait()


def lost_worker_message(error: Exception, steps_done: int) -> str:
    """One line for a collective operation that failed: a worker gone mid-training, or,
    before the first step was done, workers that cannot reach each other (TensorFlow's
    coordination joins tasks by index, so workers whose TF_CONFIG lists other addresses
    join, and fail at the first all-reduce)."""
    if not steps_done:
        address = re.search(r"ipv[46]:(\S+?):? Failed to connect", str(error))
        at = f", {address.group(1)} refused the connection" if address else ""
        return (f"the workers could not reach each other at the first training step ({type(error).__name__}{at}); "
                "give every worker the same TF_CONFIG cluster, and check that each can reach the others' addresses")
    tasks = sorted(set(re.findall(r"/job:worker/(?:replica:\d+/)?task:(\d+)", str(error))))
    who = f"worker {', '.join(tasks)}" if tasks else "a worker"
    return (f"{who} stopped answering during training ({type(error).__name__}); start every worker again with the same "
            "command: the run resumes from its last backup")


def worker_index() -> int:
    """This process' index among the workers (0, the chief, on one machine)."""
    return int(json.loads(os.environ["TF_CONFIG"])["task"]["index"]) if cluster_workers() else 0


def fit_across_workers(
    trainer: keras.Model,
    strategy: tf.distribute.Strategy,
    train: tf.data.Dataset,
    valid: tf.data.Dataset,
    *,
    epochs: int,
    initial_epoch: int,
    steps_per_epoch: int,
    callbacks: Sequence[keras.callbacks.Callback],
    verbose: int,
) -> dict[str, list[float]]:
    """``trainer.fit(train, validation_data=valid, ...)`` for ``MultiWorkerMirroredStrategy``.

    Every worker calls it with its own share of the batches (``train`` and ``valid`` already
    hold only this worker's part of each batch): each step runs ``trainer.train_step`` on
    every worker, whose gradients the optimizer sums over the workers, so every worker
    keeps the same weights.

    Args:
        trainer: The compiled training model, built under ``strategy.scope()``.
        strategy: The ``MultiWorkerMirroredStrategy``.
        train: This worker's training batches, endless.
        valid: This worker's validation batches, one pass.
        epochs: Train until this epoch.
        initial_epoch: The first epoch.
        steps_per_epoch: Steps in an epoch.
        callbacks: Keras callbacks, driven as ``fit`` drives them.
        verbose: Keras' progress display (0 none, 1 a bar, 2 a line an epoch).

    Returns:
        The history: each logged value, one an epoch.

    Raises:
        RnnlmError: A worker stopped answering, or the workers could not reach each other.
    """
    # What fit does first: build the compiled metrics' and loss' variables, from the
    # batches' shapes, outside the step. Left to the step's first trace, under several
    # local devices they fail ("You must feed a value for placeholder tensor"). Keras has
    # no public call for it.
    with strategy.scope():
        trainer._symbolic_build(data_batch=train.element_spec)
    train_function = _distributed_function(trainer.train_step, strategy)
    test_function = _distributed_function(trainer.test_step, strategy)
    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList(
        [*callbacks, history], add_progbar=verbose != 0, verbose=verbose, epochs=epochs, steps=steps_per_epoch, model=trainer
    )
    trainer.stop_training = False
    batches = iter(_as_distributed(train, strategy))
    callback_list.on_train_begin()
    logs, steps_done = {}, 0
    try:
        for epoch in range(initial_epoch, epochs):
            trainer.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            for step in range(steps_per_epoch):
                callback_list.on_train_batch_begin(step)
                logs = _numbers(train_function(next(batches)))
                steps_done += 1
                callback_list.on_train_batch_end(step, logs)
                if trainer.stop_training:
                    break
            epoch_logs = dict(logs)
            trainer.reset_metrics()
            callback_list.on_test_begin()
            test_logs = {}
            for step, batch in enumerate(_as_distributed(valid, strategy)):
                callback_list.on_test_batch_begin(step)
                test_logs = _numbers(test_function(batch))
                callback_list.on_test_batch_end(step, test_logs)
            callback_list.on_test_end(test_logs)
            epoch_logs.update({f"val_{name}": value for name, value in test_logs.items()})
            callback_list.on_epoch_end(epoch, epoch_logs)
            if trainer.stop_training:
                break
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError) as error:
        raise RnnlmError(lost_worker_message(error, steps_done)) from None
    callback_list.on_train_end(logs)
    return history.history


def clipping_the_summed_gradient(optimizer_class: type[keras.optimizers.Optimizer]) -> type[keras.optimizers.Optimizer]:
    """``optimizer_class`` whose ``global_clipnorm`` clips by the norm of the gradient the
    update applies: summed over the replicas, and over the repeated rows of a sparse one.

    Keras 3 measures something else in two ways (``BaseOptimizer._clip_gradients`` and
    ``global_norm``, read in Keras 3.15). It clips each replica's own gradient before
    their sum, so two workers with clipping on trained other weights than one worker with
    the same batch. And it measures a sparse gradient (an ``IndexedSlices``: the
    embedding's, the sampled softmax's) by its slices, so a row listed twice (a token
    twice in a batch) counts as two rows of half the size: a norm of sqrt(2) where the
    applied gradient's is 2, which also made one worker and two differ under sampled
    softmax. No public Keras API serves this, so this overrides ``_clip_gradients``:
    it sums the gradients over the replicas itself (an all-reduce; a second one follows
    in Keras), measures the sum with repeated rows added up, scales it as Keras would
    (``clip_norm / max(norm, clip_norm)``), and hands each replica its share.
    """

    class ClippingTheSum(optimizer_class):
        def _clip_gradients(self, grads):
            if not self.global_clipnorm:
                return super()._clip_gradients(grads)
            context = tf.distribute.get_replica_context()
            replicas = context.num_replicas_in_sync if context is not None else 1
            summed = context.all_reduce(tf.distribute.ReduceOp.SUM, grads) if replicas > 1 else grads
            norm = tf.sqrt(tf.add_n([_squared_norm(gradient) for gradient in summed if gradient is not None]))
            clip = tf.cast(self.global_clipnorm, norm.dtype)
            scale = clip * tf.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)  # as Keras: NaN stays NaN
            return [None if gradient is None else _scaled(gradient, scale / replicas) for gradient in summed]

    ClippingTheSum.__name__ = ClippingTheSum.__qualname__ = optimizer_class.__name__
    return ClippingTheSum


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


def _distributed_function(step: Callable, strategy: tf.distribute.Strategy) -> Callable:
    """``step`` on every worker's batch, its logs averaged over the workers."""

    @tf.function(reduce_retracing=True)
    def function(batch):
        outputs = strategy.run(step, args=(batch,))
        return {name: strategy.reduce("MEAN", value, axis=None) for name, value in outputs.items()}

    return function


def _as_distributed(dataset: tf.data.Dataset, strategy: tf.distribute.Strategy):
    """This worker's dataset as the strategy's input: each batch, this worker's share of
    a global batch, cut into one consecutive piece per local device (a GPU box has
    several), the pieces' sizes differing by at most one. Neither split again by
    TensorFlow (its auto-sharding) nor re-batched (``experimental_distribute_dataset``
    takes a dataset's batch as the global one)."""

    def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = context.num_replicas_in_sync // context.num_input_pipelines
        return dataset if local == 1 else dataset.flat_map(lambda *batch: _pieces(batch, local))

    return strategy.distribute_datasets_from_function(per_worker)


def _pieces(batch: tuple[tf.Tensor, ...], count: int) -> tf.data.Dataset:
    """``batch`` cut along its first axis into ``count`` consecutive pieces, in order: the
    local devices take one each, the first device the first."""
    size = tf.shape(batch[0], out_type=tf.int64)[0]

    def piece(index):
        first, last = worker_share(0, size, (index, count))
        return tuple(tensor[first:last] for tensor in batch)

    return tf.data.Dataset.range(count).map(piece)


def _numbers(logs: dict) -> dict[str, float]:
    return {name: float(value) for name, value in logs.items()}
