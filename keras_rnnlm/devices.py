"""Where training runs: one device, several GPUs, or the CPU, and at which precision.

One device (the CPU, or one GPU, with memory growth on so that TensorFlow does not grab
the whole card) trains under TensorFlow's default strategy, as Keras does without one;
several GPUs train with ``tf.distribute.MirroredStrategy``; several machines with
``MultiWorkerMirroredStrategy`` (:mod:`keras_rnnlm.multiworker`).

The default strategy, not ``OneDeviceStrategy``, because the latter feeds ``fit``
through a ``MultiDeviceIterator``, whose own datasets keep tf.data's autotuning thread:
destroying one (Keras does at every epoch's validation, and the run at its end) waited
up to 60 s at random (see :func:`keras_rnnlm.data._without_autotune`), and it cost 76 ms
an epoch to build. ``OneDeviceStrategy`` stays only for ``--device cpu`` on a machine
with GPUs, where the default would place ops on a GPU.
"""

from __future__ import annotations

import logging
import statistics
import time

import keras
import tensorflow as tf

from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.multiworker import Cluster, join_cluster

logger = logging.getLogger("keras_rnnlm")


def select_strategy(device: str, cluster: Cluster = Cluster()) -> tf.distribute.Strategy:
    """Picks the distribution strategy for ``device`` and logs the placement.

    Args:
        device: "auto" (every GPU if any, else the CPU), "gpu" or "cpu".
        cluster: The workers this process trains with; on one machine (the default), none.

    Raises:
        RnnlmError: "gpu" was asked for on a machine where TensorFlow sees none, or this
            worker could not join its cluster.
    """
    gpus = tf.config.list_physical_devices("GPU") if device != "cpu" else []
    if cluster.workers:
        # Every GPU of each worker's machine (or its CPU) is a replica; gradients are summed
        # over all of them by collective all-reduce.
        strategy = join_cluster(cluster)
        logger.info("placement: MultiWorkerMirroredStrategy: %d workers, %d replicas (this is worker %d)",
                    len(cluster.workers), strategy.num_replicas_in_sync, cluster.index)
        return strategy
    if device == "gpu" and not gpus:
        raise RnnlmError(
            "--device gpu was asked for but TensorFlow sees no GPU; use --device cpu, or install a "
            "CUDA-enabled TensorFlow (pip install 'tensorflow[and-cuda]')"
        )
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # Already initialised (a second run in one process): keep its setting.
            pass
    names = [f"/gpu:{number}" for number in range(len(gpus))] or ["/cpu:0"]
    return strategy_for_devices(names)


def strategy_for_devices(names: list[str]) -> tf.distribute.Strategy:
    """One device: TensorFlow's default strategy when that device is where TensorFlow
    places ops anyway (else ``OneDeviceStrategy``); several: ``MirroredStrategy`` over them."""
    if len(names) == 1:
        visible_gpus = tf.config.list_logical_devices("GPU")
        default = "/gpu:0" if visible_gpus else "/cpu:0"
        if names[0].lower() == default:
            logger.info("placement: one device, %s", names[0])
            return tf.distribute.get_strategy()
        strategy = tf.distribute.OneDeviceStrategy(names[0])
    else:
        strategy = tf.distribute.MirroredStrategy(names)
    logger.info("placement: %s on %s", type(strategy).__name__, ", ".join(names))
    return strategy


def on_gpu(strategy: tf.distribute.Strategy) -> bool:
    """Whether the strategy trains on GPUs (the default strategy: whether TensorFlow places ops on one)."""
    if not distributes(strategy):
        return bool(tf.config.list_logical_devices("GPU"))
    return "GPU" in str(strategy.extended.worker_devices[0]).upper()


def distributes(strategy: tf.distribute.Strategy) -> bool:
    """False for TensorFlow's default strategy (one device, no distribution)."""
    with strategy.scope():
        return tf.distribute.has_strategy()


def set_precision(precision: str, strategy: tf.distribute.Strategy) -> str:
    """Sets Keras' global dtype policy.

    Args:
        precision: "float32"; "mixed" (float16 on GPU, bfloat16 on CPU, the softmax
            float32 either way); or "auto": mixed on GPUs with float16 units (compute
            capability 7.0 or newer, where the cuDNN kernels run it fast) and on a CPU
            whose bfloat16 matmul measures clearly faster than float32 (oneDNN on a
            processor with bfloat16 instructions), else float32.
        strategy: Where training runs.

    Returns:
        The policy's name.
    """
    mixed = "mixed_float16" if on_gpu(strategy) else "mixed_bfloat16"
    reason = ""
    if precision == "auto":
        if on_gpu(strategy):
            capabilities = [
                tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
                for gpu in tf.config.list_physical_devices("GPU")
            ]
            fast = bool(capabilities) and min(capabilities) >= (7, 0)
            reason = f" (auto: GPU compute capability {min(capabilities, default=(0, 0))})"
        elif isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # A timing could differ between workers, and workers whose steps differ in
            # precision would wait for each other's all-reduce for ever: every worker
            # must choose alike, from what it knows without measuring.
            fast = False
            reason = ' (auto: float32 on CPUs across workers; set train.precision = "mixed" for bfloat16)'
        else:
            speedup = bfloat16_matmul_speedup()
            fast = speedup >= BFLOAT16_SPEEDUP_NEEDED
            reason = f" (auto: a bfloat16 matmul runs {speedup:.2f}x float32 on this CPU)"
        precision = "mixed" if fast else "float32"
    policy = mixed if precision == "mixed" else "float32"
    keras.mixed_precision.set_global_policy(policy)
    logger.info("precision: %s%s", policy, reason)
    return policy


# Mixed bfloat16 also costs casts of every weight and activation; below this matmul
# speed-up the step gains too little to be worth its rounding.
BFLOAT16_SPEEDUP_NEEDED = 1.3


def bfloat16_matmul_speedup(size: int = 1024, repeats: int = 7) -> float:
    """How many times faster a (size x size) bfloat16 matmul runs than a float32 one on
    the CPU: the median ratio of ``repeats`` pairs, each pair timed back to back so that
    a busy moment slows both (a fraction of a second in all)."""
    with tf.device("/cpu:0"):
        a = tf.random.normal((size, size), dtype=tf.float32)
        multiplies = [tf.function(lambda a=tf.cast(a, dtype): tf.linalg.matmul(a, a)[0, 0]) for dtype in (tf.float32, tf.bfloat16)]

        def seconds(multiply) -> float:
            started = time.perf_counter()
            multiply().numpy()
            return time.perf_counter() - started

        for multiply in multiplies:
            multiply()  # trace and warm up
        ratios = []
        for _ in range(repeats):
            float32, bfloat16 = (seconds(multiply) for multiply in multiplies)
            ratios.append(float32 / bfloat16)
        return statistics.median(ratios)
