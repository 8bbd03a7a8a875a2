"""Where training runs: one device, several GPUs, or the CPU, and at which precision.

One GPU trains there with memory growth on (TensorFlow does not grab the whole card);
several GPUs train with ``tf.distribute.MirroredStrategy``; with none, the CPU.
"""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

from keras_rnnlm.errors import RnnlmError

logger = logging.getLogger("keras_rnnlm")


def select_strategy(device: str) -> tf.distribute.Strategy:
    """Picks the distribution strategy for ``device`` and logs the placement.

    Args:
        device: "auto" (every GPU if any, else the CPU), "gpu" or "cpu".

    Raises:
        RnnlmError: "gpu" was asked for on a machine where TensorFlow sees none.
    """
    gpus = tf.config.list_physical_devices("GPU") if device != "cpu" else []
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
    """One device: ``OneDeviceStrategy``; several: ``MirroredStrategy`` over them."""
    if len(names) == 1:
        strategy = tf.distribute.OneDeviceStrategy(names[0])
    else:
        strategy = tf.distribute.MirroredStrategy(names)
    logger.info("placement: %s on %s", type(strategy).__name__, ", ".join(names))
    return strategy


def set_precision(mixed_precision: bool, strategy: tf.distribute.Strategy) -> str:
    """Sets Keras' global dtype policy: mixed float16 on GPU, mixed bfloat16 on CPU.

    Returns:
        The policy's name.
    """
    on_gpu = "GPU" in str(strategy.extended.worker_devices[0]).upper()
    if not mixed_precision:
        policy = "float32"
    else:
        policy = "mixed_float16" if on_gpu else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    logger.info("precision: %s", policy)
    return policy
