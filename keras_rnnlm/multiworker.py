"""Training across machines: who this worker is (``TF_CONFIG``), joining the cluster
(TensorFlow's ``MultiWorkerMirroredStrategy``: collective all-reduce over gRPC), what
each worker reads, and what a failed all-reduce means.

``TF_CONFIG`` is TensorFlow's standard variable: the cluster's worker addresses and this
process' index among them, set by any launcher (Kubernetes / Kubeflow TFJob, Slurm
scripts, Ray's TensorflowTrainer, ``python -m keras_rnnlm.launch``, or by hand). It is
read once (:meth:`Cluster.from_environment`) and passed on. Worker 0 is the chief: it
alone writes the run folder.

Training runs Keras' own ``fit`` on every worker, as on one machine;
:class:`keras_rnnlm.keras_private.FitAcrossWorkers` makes it run under this strategy.
TensorFlow is imported inside the functions that need it, so the command line reads
``TF_CONFIG`` before TensorFlow loads.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.notices import unfiltered_stderr


@dataclass(frozen=True)
class Cluster:
    """The workers of a cluster and this process' place among them.

    Attributes:
        workers: The workers' addresses, ``host:port``; empty on one machine.
        index: This process' index among them; 0, the chief, on one machine.
    """

    workers: tuple[str, ...] = ()
    index: int = 0

    @classmethod
    def from_environment(cls) -> Cluster:
        """The cluster ``TF_CONFIG`` describes, or one machine when it is unset.

        Raises:
            RnnlmError: ``TF_CONFIG`` is not JSON, names no workers, or gives this task a
                type other than "worker" or an index outside the list.
        """
        text = os.environ.get("TF_CONFIG", "")
        if not text.strip():
            return cls()
        try:
            config = json.loads(text)
            workers = tuple(str(address) for address in config["cluster"]["worker"])
            kind, index = config["task"]["type"], int(config["task"]["index"])
        except (ValueError, KeyError, TypeError):
            raise RnnlmError(
                'TF_CONFIG is not a cluster description; it must be JSON like {"cluster": {"worker": ["host:port", ...]}, '
                '"task": {"type": "worker", "index": 0}}'
            ) from None
        if kind != "worker" or not 0 <= index < len(workers):
            raise RnnlmError(
                f"TF_CONFIG gives this task type {kind!r} and index {index}, but the cluster has workers 0 to "
                f"{len(workers) - 1} only; set task to one of them"
            )
        return cls(workers, index)

    @property
    def chief(self) -> bool:
        """Whether this process writes the run folder: worker 0, or the only one."""
        return self.index == 0

    @property
    def shard(self) -> tuple[int, int]:
        """(index, count): which share of every batch this worker reads."""
        return self.index, max(len(self.workers), 1)


# Seconds a worker waits for the others to join, from the environment: like TF_CONFIG, a
# setting of the cluster, not of the run.
JOIN_TIMEOUT_VARIABLE = "KERAS_RNNLM_JOIN_TIMEOUT"
DEFAULT_JOIN_TIMEOUT = 300.0
# Sleeps, then writes its message and kills the worker: argv = pid, seconds, message.
_WATCHDOG = ("import os, signal, sys, time; time.sleep(float(sys.argv[2])); sys.stderr.write(sys.argv[3] + '\\n'); "
             "sys.stderr.flush(); os.kill(int(sys.argv[1]), signal.SIGKILL)")


def join_cluster(cluster: Cluster):
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
    import tensorflow as tf

    timeout = float(os.environ.get(JOIN_TIMEOUT_VARIABLE, DEFAULT_JOIN_TIMEOUT))
    message = (f"error: worker {cluster.index} waited {timeout:g} s for the other workers ({', '.join(cluster.workers)}) "
               f"and not all came; start every worker with the same TF_CONFIG cluster, check the addresses and the "
               f"network, or set {JOIN_TIMEOUT_VARIABLE} to wait longer")
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(timeout), message],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=unfiltered_stderr())
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (tf.errors.OpError, RuntimeError, ValueError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise RnnlmError(f"worker {cluster.index} could not start its server at {cluster.workers[cluster.index]} "
                         f"({first_line}); is that port in use? give free ports in TF_CONFIG") from None
    finally:
        watchdog.kill()
        watchdog.wait()


def worker_batches(dataset, strategy):
    """This worker's batches (``dataset`` reads only its share of each batch) as the
    strategy's input, cut into one consecutive piece per local device (a GPU box has
    several), the pieces' sizes differing by at most one: neither split again by
    TensorFlow (its auto-sharding) nor re-batched (``experimental_distribute_dataset``
    takes a dataset's batch as the global one)."""
    import tensorflow as tf

    from keras_rnnlm.data import worker_share

    def pieces(batch, count):  # the batch cut along its first axis, in order: the first device takes the first
        size = tf.shape(batch[0], out_type=tf.int64)[0]

        def piece(index):
            first, last = worker_share(0, size, (index, count))
            return tuple(tensor[first:last] for tensor in batch)

        return tf.data.Dataset.range(count).map(piece)

    def per_worker(context: tf.distribute.InputContext):
        local = context.num_replicas_in_sync // context.num_input_pipelines
        return dataset if local == 1 else dataset.flat_map(lambda *batch: pieces(batch, local))

    return strategy.distribute_datasets_from_function(per_worker)


@contextlib.contextmanager
def lost_workers_named(steps_done) -> Iterator[None]:
    """Turns a collective operation that failed in the block into one line
    (:func:`lost_worker_message`).

    Args:
        steps_done: Returns how many training steps the block has taken so far.

    Raises:
        RnnlmError: A worker stopped answering, or the workers could not reach each other.
    """
    import tensorflow as tf

    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError) as error:
        raise RnnlmError(lost_worker_message(error, steps_done())) from None


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
