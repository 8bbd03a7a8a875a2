import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tensorflow as tf

from keras_rnnlm import devices
from keras_rnnlm.devices import distributes, on_gpu, select_strategy, set_precision, strategy_for_devices

TESTS = Path(__file__).resolve().parent


def test_one_device_trains_under_the_default_strategy_and_the_cpu_is_it_without_a_gpu():
    """One device needs no distribution: the default strategy, whose fit reads a dataset
    directly (OneDeviceStrategy's MultiDeviceIterator stalled at its teardown)."""
    strategy = select_strategy("auto")
    assert strategy is tf.distribute.get_strategy() and not distributes(strategy) and not on_gpu(strategy)
    assert select_strategy("cpu") is strategy and strategy_for_devices(["/cpu:0"]) is strategy
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0"])
    assert distributes(mirrored) and not on_gpu(mirrored)


def test_mixed_precision_on_cpu_is_bfloat16():
    strategy = strategy_for_devices(["/cpu:0"])
    try:
        assert set_precision("mixed", strategy) == "mixed_bfloat16"
    finally:
        assert set_precision("float32", strategy) == "float32"


@pytest.mark.parametrize("speedup, policy", [(1.9, "mixed_bfloat16"), (0.7, "float32")])
def test_auto_precision_on_cpu_follows_the_measured_bfloat16_speedup(monkeypatch, speedup, policy):
    monkeypatch.setattr(devices, "bfloat16_matmul_speedup", lambda: speedup)
    try:
        assert set_precision("auto", strategy_for_devices(["/cpu:0"])) == policy
    finally:
        set_precision("float32", strategy_for_devices(["/cpu:0"]))


@pytest.mark.slow
def test_mirrored_strategy_trains_over_two_logical_cpus(song_file, tmp_path):
    """The several-GPU path, run on two logical CPU devices in a fresh process
    (logical devices must be set before TensorFlow starts)."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from conftest import small_config
        from keras_rnnlm.devices import strategy_for_devices
        from keras_rnnlm.train import train
        strategy = strategy_for_devices([d.name for d in tf.config.list_logical_devices("CPU")])
        print("replicas", strategy.num_replicas_in_sync, type(strategy).__name__)
        import keras
        import numpy as np

        class ReplicasAgree(keras.callbacks.Callback):  # every replica's copy got the same update
            def on_train_end(self, logs=None):
                variables = self.model.trainable_weights + self.model.optimizer.variables
                copies = [variable.value.values for variable in variables if hasattr(variable.value, "values")]
                assert len(copies) > len(self.model.trainable_weights)
                print("replicas differ by", max(float(np.max(np.abs(a.numpy() - b.numpy()))) for a, b in copies))

        config = small_config([{str(song_file)!r}], train={{"epochs": 12, "sample_length": 5}})
        summary = train(config, {str(tmp_path / "run")!r}, strategy=strategy, verbose=0, extra_callbacks=[ReplicasAgree()])
        print("val_accuracy", summary["val_accuracy"])

        from keras_rnnlm.errors import RnnlmError
        bptt = small_config([{str(song_file)!r}], data={{"mode": "bptt", "batch_size": 2, "bptt_steps": 5}})
        try:
            train(bptt, {str(tmp_path / "bptt")!r}, strategy=strategy, verbose=0)
        except RnnlmError as error:
            print("bptt refused:", error)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas 2 MirroredStrategy" in result.stdout
    assert float(result.stdout.split("replicas differ by")[1].split()[0]) == 0.0
    assert float(result.stdout.split("val_accuracy")[1].split()[0]) > 0.95
    assert 'bptt refused: data.mode = "bptt" trains on one device' in result.stdout
    assert not (tmp_path / "bptt").exists()
    assert (tmp_path / "run" / "model.keras").is_file()
