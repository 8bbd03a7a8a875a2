"""Training across workers (MultiWorkerMirroredStrategy on loopback, started by
``python -m keras_rnnlm.launch``): the same weights as one worker with the same global
batch, the chief alone writing, and one-line errors."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import SONG, small_config

from keras_rnnlm import cli
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.multiworker import Cluster

SETTINGS = ["--set", "data.batch_size=16", "--set", "model.units=32", "--set", "model.embedding_dim=16",
            "--set", "model.dropout=0.0", "--set", 'train.precision="float32"', "--set", "train.tensorboard=false",
            "--set", "train.sample_length=0", "--set", "train.steps_per_epoch=20",
            "--set", "train.clipnorm=0.1"]  # small enough that clipping acts at every step


@pytest.mark.slow
@pytest.mark.parametrize("softmax", [[], ["--set", 'model.softmax="sampled"', "--set", "model.sampled_candidates=8"]],
                         ids=["full softmax", "sampled softmax"])
def test_two_workers_train_the_weights_one_worker_trains_and_only_the_chief_writes(tmp_path, softmax):
    (tmp_path / "song.txt").write_text(SONG * 40, encoding="utf-8")
    scratch = tmp_path / "scratch"  # the workers' temporary folders
    scratch.mkdir()
    common = ["--corpus", str(tmp_path / "song.txt"), "--output-dir", str(tmp_path / "runs"), *SETTINGS, *softmax, "--epochs", "2"]
    environment = {"PATH": "/usr/bin:/bin", "TMPDIR": str(scratch), "TF_CPP_MIN_LOG_LEVEL": "2"}
    two = subprocess.run([sys.executable, "-m", "keras_rnnlm.launch", "--workers", "2", "--", *common, "--run-name", "two"],
                         capture_output=True, text=True, env=environment, timeout=600, check=False)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "[worker 1] placement: MultiWorkerMirroredStrategy: 2 workers, 2 replicas (this is worker 1)" in two.stderr
    one = subprocess.run([sys.executable, "-m", "keras_rnnlm.train", *common, "--run-name", "one"],
                         capture_output=True, text=True, env=environment, timeout=600, check=False)
    assert one.returncode == 0, one.stderr[-3000:]

    runs = tmp_path / "runs"
    one_weights, two_weights = (keras.saving.load_model(runs / name / "model.keras", compile=False).get_weights() for name in ("one", "two"))
    for single, across in zip(one_weights, two_weights, strict=True):
        np.testing.assert_allclose(across, single, rtol=0, atol=1e-5)
    assert sorted(path.name for path in (runs / "two").iterdir()) == sorted(path.name for path in (runs / "one").iterdir())
    assert not list(scratch.glob("keras_rnnlm_worker_*"))  # worker 1 removed its scratch folder
    history = (runs / "two" / "history.csv").read_text().splitlines()
    assert len(history) == 3  # written once, by the chief


@pytest.mark.slow
def test_a_worker_with_several_devices_gives_each_its_piece_of_the_batch(tmp_path):
    """A GPU box per worker: ``fit`` on its batches cut into one piece per local device
    (``worker_batches``; two logical CPUs, in a fresh process, under MirroredStrategy:
    MultiWorkerMirroredStrategy takes only GPUs as local devices) trains the weights
    ``fit`` trains on one device, clipping included."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras
        import numpy as np
        from conftest import small_config
        from keras_rnnlm.data import training_data
        from keras_rnnlm.callbacks import OutputKernel
        from keras_rnnlm.model import build_model, compile_model, output_rows, training_model
        from keras_rnnlm.multiworker import worker_batches

        config = small_config([], train={{"clipnorm": 0.1}})  # clipping acts at every step
        tokens = np.random.default_rng(0).integers(2, 40, 3000).astype(np.int32)
        data = training_data(config.data, [tokens[:2700]], [tokens[2700:]], seed=0)

        def trained(strategy, sampled_candidates):
            keras.utils.set_random_seed(0)
            with strategy.scope():
                model = build_model(config.model, config.data.window_size, 40, unroll=True)
                compile_model(model, config.train)
                trainer = training_model(model, config.train, sampled_candidates=sampled_candidates)
            # Sampled: the rows brought current (Adam's catch-up) before validation and copied into the kernel.
            callbacks = [OutputKernel(model, output_rows(trainer))] if sampled_candidates else []
            def batches(dataset):
                return dataset if strategy.num_replicas_in_sync == 1 else worker_batches(dataset, strategy)

            history = trainer.fit(batches(data.train(0)), validation_data=batches(data.valid), shuffle=False, epochs=2,
                                  steps_per_epoch=10, verbose=0, callbacks=callbacks).history
            return model.get_weights(), history

        # One strategy object for both runs: two over the same devices share collective keys.
        device, devices = tf.distribute.OneDeviceStrategy("/cpu:0"), tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        for candidates in (0, 8):  # the full softmax, and the sampled one (every replica draws the same tokens)
            one, one_history = trained(device, candidates)
            two, two_history = trained(devices, candidates)
            print("weights differ by", max(float(np.max(np.abs(a - b))) for a, b in zip(one, two, strict=True)))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    differences = [float(line.split()[-1]) for line in result.stdout.splitlines() if line.startswith("weights differ by")]
    assert len(differences) == 2 and max(differences) < 1e-5, result.stdout


def test_tf_config_names_the_cluster_or_is_a_one_line_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert Cluster.from_environment() == Cluster() and Cluster().chief and Cluster().shard == (0, 1)
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert Cluster.from_environment() == Cluster(("localhost:1", "localhost:2"), 1)
    assert not Cluster.from_environment().chief and Cluster.from_environment().shard == (1, 2)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 2}}))
    with pytest.raises(RnnlmError, match="index 2, but the cluster has workers 0 to 1 only"):
        Cluster.from_environment()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(RnnlmError, match="TF_CONFIG is not a cluster description"):
        Cluster.from_environment()


def test_settings_that_cannot_train_across_workers_are_refused(song_file):
    with pytest.raises(RnnlmError, match="data.batch_size = 15 does not divide among 2 replicas; set it to a multiple of 2"):
        small_config([song_file], data={"batch_size": 15}).check_replicas(2, 2)
    with pytest.raises(RnnlmError, match=r"data.batch_size = 18 does not divide among 4 replicas \(2 workers, 2 devices each\)"):
        small_config([song_file], data={"batch_size": 18}).check_replicas(4, 2)
    with pytest.raises(RnnlmError, match="train.backup_every_steps must be 0 across workers"):
        small_config([song_file], train={"backup_every_steps": 5}).check_replicas(2, 2)
    bptt = small_config([song_file], data={"mode": "bptt"})
    with pytest.raises(RnnlmError, match="trains on one device .* 2 were found; train it on one machine, without TF_CONFIG"):
        bptt.check_replicas(2, 2)
    with pytest.raises(RnnlmError, match="2 were found; pass --device cpu, or make one GPU visible"):
        bptt.check_replicas(2)
    small_config([song_file]).check_replicas(4, 2)
    small_config([song_file], data={"batch_size": 15}).check_replicas(2)  # one machine: Keras splits any batch


@pytest.mark.slow
def test_launch_stops_every_worker_when_one_fails_and_names_it(tmp_path, capsys):
    (tmp_path / "song.txt").write_text(SONG * 40, encoding="utf-8")
    argv = ["--workers", "2", "--", "--corpus", str(tmp_path / "song.txt"), "--output-dir", str(tmp_path / "runs"),
            "--set", 'model.softmax="sampled"', "--set", "model.sampled_candidates=500"]  # refused by the workers, once they know the vocabulary
    assert cli.main("launch", argv) == 2
    err = capsys.readouterr().err
    assert "model.sampled_candidates = 500 is not below the vocabulary's" in err
    assert err.strip().splitlines()[-1].startswith("error: worker ") and "so the other workers were stopped" in err
    # A mistake in the train arguments is found before any worker starts: one line.
    assert cli.main("launch", ["--workers", "2", "--", "--corpus", str(tmp_path / "missing.txt")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: corpus path {tmp_path / 'missing.txt'} does not exist; check the path or pass --corpus FILE"
    ]
    assert cli.main("launch", ["--workers", "1", "--"]) == 2
    assert "--workers must be at least 2" in capsys.readouterr().err
    bptt = ["--set", 'data.mode="bptt"', "--set", "data.batch_size=2", "--set", "data.bptt_steps=5"]
    assert cli.main("launch", ["--workers", "2", "--", "--corpus", str(tmp_path / "song.txt"), *bptt]) == 2
    assert "train it on one machine, without TF_CONFIG" in capsys.readouterr().err  # before any worker starts


def _pids_of_worker(index: int, marker: str) -> list[int]:
    """The processes whose command line holds ``marker`` and whose TF_CONFIG makes them worker ``index``."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environment = (proc / "environ").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            continue
        if marker in command and f'"index": {index}' in environment:
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
def test_a_run_whose_workers_were_killed_resumes_to_the_uninterrupted_result(tmp_path):
    """Worker 1 killed after epoch 1, then the chief after epoch 2: each time the same
    command resumes, and the run ends as the uninterrupted one did."""
    (tmp_path / "song.txt").write_text(SONG * 40, encoding="utf-8")
    common = ["--corpus", str(tmp_path / "song.txt"), "--output-dir", str(tmp_path / "runs"), *SETTINGS, "--epochs", "3"]
    environment = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"}
    backup = tmp_path / "runs" / "resumed" / "backup" / "latest.npz"

    def launch_command(name):
        return [sys.executable, "-m", "keras_rnnlm.launch", "--workers", "2", "--", *common, "--run-name", name]

    def kill_after_the_next_backup(worker):
        before = backup.stat().st_mtime_ns if backup.exists() else None
        launched = subprocess.Popen(launch_command("resumed"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True, env=environment)
        deadline = time.monotonic() + 300
        while (not backup.exists() or backup.stat().st_mtime_ns == before) and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in _pids_of_worker(worker, "--run-name resumed"):
            os.kill(pid, signal.SIGKILL)
        _, stderr = launched.communicate(timeout=120)
        assert launched.returncode == 2 and f"error: worker {worker} failed" in stderr.strip().splitlines()[-1], stderr[-3000:]
        return stderr

    whole = subprocess.run(launch_command("whole"), capture_output=True, text=True, env=environment, timeout=600, check=False)
    assert whole.returncode == 0, whole.stderr[-3000:]
    kill_after_the_next_backup(1)
    assert "[worker 0] resuming at epoch 2" in kill_after_the_next_backup(0)
    again = subprocess.run(launch_command("resumed"), capture_output=True, text=True, env=environment, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[worker 0] resuming at epoch 3" in again.stderr and "[worker 1] resuming" not in again.stderr
    runs = tmp_path / "runs"
    assert (runs / "resumed" / "history.csv").read_text() == (runs / "whole" / "history.csv").read_text()
    for resumed, kept in zip(*(keras.saving.load_model(runs / name / "model.keras", compile=False).get_weights()
                               for name in ("resumed", "whole")), strict=True):
        np.testing.assert_allclose(resumed, kept, rtol=0, atol=1e-6)


def test_a_lost_worker_is_named_in_one_line():
    from keras_rnnlm.multiworker import lost_worker_message

    error = RuntimeError("Collective ops is aborted by: Error reported from /job:worker/task:1: The following tasks are "
                         "unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have crashed.")
    message = lost_worker_message(error, steps_done=40)
    assert message.startswith("worker 1 stopped answering during training") and "\n" not in message
    assert "resumes from its last backup" in message
    # Workers whose TF_CONFIG clusters list other addresses join (by index), then fail at
    # the first all-reduce: TensorFlow 2.21's error then, read from such a run.
    error = RuntimeError("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:36639: Failed to connect "
                         "to remote host: Connection refused\nAdditional GRPC error information from remote target "
                         "/job:worker/replica:0/task:1 while calling /tensorflow.WorkerService/RecvBuf")
    assert lost_worker_message(error, steps_done=0) == (
        "the workers could not reach each other at the first training step (RuntimeError, 127.0.0.1:36639 refused the "
        "connection); give every worker the same TF_CONFIG cluster, and check that each can reach the others' addresses"
    )


@pytest.mark.slow
def test_a_worker_whose_peers_never_come_ends_with_one_line(tmp_path):
    from keras_rnnlm.launch import free_ports

    (tmp_path / "song.txt").write_text(SONG * 40, encoding="utf-8")
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}  # worker 1 is never started
    environment = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_RNNLM_JOIN_TIMEOUT": "2",
                   "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})}
    result = subprocess.run([sys.executable, "-m", "keras_rnnlm.train", "--corpus", str(tmp_path / "song.txt"),
                             "--output-dir", str(tmp_path / "runs"), *SETTINGS], capture_output=True, text=True,
                            env=environment, timeout=120, check=False)
    assert result.returncode == -signal.SIGKILL
    assert result.stderr.strip().splitlines()[-1].startswith("error: worker 0 waited 2 s for the other workers (localhost:")
    assert not (tmp_path / "runs" / "psalms").exists()  # nothing written


@pytest.mark.slow
def test_workers_given_different_clusters_end_at_the_first_step_with_one_line(tmp_path):
    """Worker 0 is told the cluster is [A, B], worker 1 that it is [A, C] (and listens on
    C): TensorFlow joins them by index, and the first all-reduce cannot reach B."""
    from keras_rnnlm.launch import free_ports

    (tmp_path / "song.txt").write_text(SONG * 40, encoding="utf-8")
    a, b, c = (f"localhost:{port}" for port in free_ports(3))
    workers = []
    for index, cluster in enumerate(([a, b], [a, c])):
        environment = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_RNNLM_JOIN_TIMEOUT": "60",
                       "TF_CONFIG": json.dumps({"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen([sys.executable, "-m", "keras_rnnlm.train", "--corpus", str(tmp_path / "song.txt"),
                                         "--output-dir", str(tmp_path / "runs"), *SETTINGS],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environment))
    for worker in workers:
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 2, stderr[-3000:]
        assert stderr.strip().splitlines()[-1].startswith("error: the workers could not reach each other at the first training step")


@pytest.mark.slow
def test_a_port_in_use_is_a_one_line_error_naming_the_worker(tmp_path):
    import socket

    from keras_rnnlm.launch import free_ports

    (tmp_path / "song.txt").write_text(SONG * 40, encoding="utf-8")
    with socket.socket() as busy:
        busy.bind(("localhost", 0))
        busy.listen()
        cluster = {"worker": [f"localhost:{busy.getsockname()[1]}", f"localhost:{free_ports(1)[0]}"]}
        environment = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_RNNLM_JOIN_TIMEOUT": "60",
                       "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})}
        result = subprocess.run([sys.executable, "-m", "keras_rnnlm.train", "--corpus", str(tmp_path / "song.txt"),
                                 "--output-dir", str(tmp_path / "runs"), *SETTINGS], capture_output=True, text=True,
                                env=environment, timeout=120, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: worker 0 could not start its server at {cluster['worker'][0]} (Could not start gRPC server); "
        "is that port in use? give free ports in TF_CONFIG"
    )
