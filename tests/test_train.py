import json
import math
import subprocess
import sys
from pathlib import Path

import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import SONG, small_config
from keras_rnnlm import cli
from keras_rnnlm.notices import NOTICES
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.generate import Generator
from keras_rnnlm.runs import RunFolder
from keras_rnnlm.train import train
from keras_rnnlm.vocab import Vocabulary

ROOT = Path(__file__).resolve().parent.parent


def test_a_repetitive_song_is_learned_and_the_run_folder_is_complete(song_run):
    summary = json.loads((song_run / "summary.json").read_text())
    assert summary["val_accuracy"] > 0.95
    assert summary["val_perplexity"] < 1.5
    for name in ("model.keras", "vocabulary.txt", "config.toml", "history.csv", "curves.png", "summary.json"):
        assert (song_run / name).is_file(), name
    assert (song_run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not (song_run / "backup").exists()  # Removed once training finishes.
    assert not list(song_run.glob(".*partial*"))
    rows = RunFolder(song_run).read_history()
    assert [int(row["epoch"]) for row in rows] == list(range(len(rows)))
    assert {"loss", "val_loss", "perplexity", "val_perplexity", "accuracy", "top5_accuracy", "val_top5_accuracy"} <= set(rows[0])
    for row in rows:  # perplexity is exp of the epoch's mean cross-entropy
        assert row["perplexity"] == pytest.approx(math.exp(row["loss"]), rel=1e-6)
        assert row["val_perplexity"] == pytest.approx(math.exp(row["val_loss"]), rel=1e-6)


# Runs in a fresh process that cannot import keras_rnnlm: loads a run's model.keras with
# Keras alone and checks what it holds.
KERAS_ALONE = textwrap.dedent("""
    import json, sys
    sys.modules["keras_rnnlm"] = None  # importing it now fails
    import keras, numpy as np
    model = keras.saving.load_model(sys.argv[1] + "/model.keras")
    windows = np.array(json.loads(sys.argv[2]), np.int32)
    print(json.dumps({
        "layers": [type(layer).__name__ for layer in model.layers],
        "optimizer": type(model.optimizer).__name__,
        "steps": int(model.optimizer.iterations.numpy()),
        "probabilities": model.predict(windows, verbose=0).tolist(),
        "loss after one more step": model.fit(windows, windows[:, -1], verbose=0).history["loss"][0],
    }))
""")


def test_model_keras_is_a_plain_keras_model_that_loads_and_trains_without_keras_rnnlm(song_run):
    generator = Generator.from_run(song_run)
    windows = generator.windows_from_prompts(["cause baby now we got", "", "you know"])
    result = subprocess.run([sys.executable, "-c", KERAS_ALONE, str(song_run), json.dumps(windows.tolist())],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["layers"] == ["Embedding", "LSTM", "Dropout", "Dense", "Activation"]
    assert loaded["optimizer"] == "Adam" and loaded["steps"] > 0  # the trained optimizer's state
    assert math.isfinite(loaded["loss after one more step"])
    np.testing.assert_allclose(loaded["probabilities"], generator.model.predict(windows, verbose=0), atol=1e-6)
    steps = generator.logits.prepare()  # generation's own next-token computation, <pad> and <unk> banned
    allowed = np.array(loaded["probabilities"])
    allowed[:, :2] = 0
    allowed /= allowed.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(tf.nn.softmax(steps.logits(steps.start(windows)))[:, :18], allowed, atol=1e-5)


def test_mixed_precision_trains_through_the_window_lstm_and_keeps_the_softmax_in_float32(song_file, tmp_path):
    class TrainingLayers(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.layers = [type(layer).__name__ for layer in self.model.layers]

    layers = TrainingLayers()
    try:
        summary = train(small_config([song_file], train={"epochs": 6, "precision": "mixed"}), tmp_path / "run",
                        extra_callbacks=[layers], verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert layers.layers == ["Embedding", "WindowLSTM", "Dropout", "Dense", "Activation"]  # the last: float32 logits
    assert summary["val_accuracy"] > 0.9
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert type(model.layers[1]) is keras.layers.LSTM
    assert model.layers[1].compute_dtype == "bfloat16" and model.layers[-1].compute_dtype == "float32"


class Interrupt(keras.callbacks.Callback):
    """Stops the process like Ctrl-C at the end of a given epoch, or at a batch of its
    training or of its validation."""

    def __init__(self, at_epoch, training_batch=None, validation_batch=None):
        super().__init__()
        self.at_epoch, self.training_batch, self.validation_batch = at_epoch, training_batch, validation_batch
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (self.at_epoch, self.training_batch):
            raise KeyboardInterrupt

    def on_test_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (self.at_epoch, self.validation_batch):
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at_epoch and self.training_batch is None and self.validation_batch is None:
            raise KeyboardInterrupt


class EpochsSeen(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def test_an_interrupted_run_resumes_at_the_next_epoch(song_file, tmp_path):
    config = small_config([song_file], train={"epochs": 4})
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config, run, extra_callbacks=[Interrupt(at_epoch=1)], verbose=0)
    assert (run / "backup").exists() and not (run / "summary.json").exists()
    vocabulary = Vocabulary.load(run / "vocabulary.txt")

    seen = EpochsSeen()
    train(config, run, extra_callbacks=[seen], verbose=0)
    assert seen.epochs == [2, 3]
    assert [int(row["epoch"]) for row in RunFolder(run).read_history()] == [0, 1, 2, 3]
    assert Vocabulary.load(run / "vocabulary.txt") == vocabulary
    # Running the finished run again does nothing and says so.
    assert train(config, run, verbose=0) == json.loads((run / "summary.json").read_text())


def saved_weights(run):
    return keras.saving.load_model(run / "model.keras", compile=False).get_weights()


RESUMED_MODES = {  # mode: (backup every this many steps, steps an epoch)
    "windows": (0, 0), "windows, backups inside epochs": (4, 0), "bptt": (4, 0),
    "windows, epochs of 10 steps": (4, 10),  # a pass is 39 steps
    "bptt, sampled softmax, tied embeddings": (4, 0),
    "bptt, attention, layer norm": (4, 0),
}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Runs trained without interruption, one per data mode, with dropout, shuffling, early
    stopping and the learning-rate schedule all in play: ``uninterrupted(mode)`` is the
    mode's config and run folder, trained when first asked for."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    (folder / "song.txt").write_text(SONG * 40, encoding="utf-8")
    trained = {}

    def run(mode):
        if mode not in trained:
            every_steps, epoch_steps = RESUMED_MODES[mode]
            data = {"mode": "bptt", "batch_size": 4, "bptt_steps": 5} if mode.startswith("bptt") else {}
            model = {"dropout": 0.3}
            if "sampled" in mode:  # the candidates drawn at a step follow from the seed and the step
                model.update(softmax="sampled", sampled_candidates=6, tie_embeddings=True, embedding_dim=32)
            if "attention" in mode:  # the memory is carried state: backed up and restored with the lanes'
                model.update(attention=True, attention_memory=8, layer_norm=True)
            config = small_config([folder / "song.txt"], data=data, model=model,
                                  train={"epochs": 8, "early_stopping_patience": 2, "reduce_lr_patience": 1,
                                         "learning_rate": 0.08, "backup_every_steps": every_steps,
                                         "steps_per_epoch": epoch_steps})
            train(config, folder / mode, verbose=0)
            trained[mode] = config, folder / mode
        return trained[mode]

    return run


@pytest.mark.parametrize(
    "mode, interruption",
    [("windows", {"at_epoch": 2, "training_batch": 3}),
     # The rarer paths run with the slow tests (CI runs them after the README's command).
     pytest.param("windows, backups inside epochs", {"at_epoch": 2, "training_batch": 10}, marks=pytest.mark.slow),
     pytest.param("windows, backups inside epochs", {"at_epoch": 1, "validation_batch": 1}, marks=pytest.mark.slow),
     pytest.param("bptt", {"at_epoch": 2, "training_batch": 6}, marks=pytest.mark.slow),  # the lanes' state: windows' mechanism
     pytest.param("windows, epochs of 10 steps", {"at_epoch": 3, "training_batch": 6}, marks=pytest.mark.slow),
     pytest.param("bptt, sampled softmax, tied embeddings", {"at_epoch": 2, "training_batch": 6}, marks=pytest.mark.slow),
     pytest.param("bptt, attention, layer norm", {"at_epoch": 2, "training_batch": 6}, marks=pytest.mark.slow)],
    ids=["inside an epoch", "inside an epoch, from its step 8", "inside validation, from the epoch's last backup",
         "bptt, inside an epoch, from its step 4", "epochs shorter than a pass, from step 34, across the pass' end at 39",
         "bptt with sampled softmax and tied embeddings, from step 4", "bptt with attention and layer norm, from step 4"],
)
def test_an_interrupted_run_ends_exactly_where_the_uninterrupted_one_ends(uninterrupted, tmp_path, mode, interruption):
    config, whole_run = uninterrupted(mode)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "resumed", extra_callbacks=[Interrupt(**interruption)], verbose=0)
    train(config, tmp_path / "resumed", verbose=0)
    whole = RunFolder(whole_run).read_history()
    assert RunFolder(tmp_path / "resumed").read_history() == whole
    if mode == "windows, epochs of 10 steps":
        assert len(whole) >= 4  # the resumed epoch was reached
    elif mode.startswith("windows"):  # the schedule halved the rate on the way, and early stopping ended the run
        assert len({row["learning_rate"] for row in whole}) > 1 and len(whole) < config.train.epochs
    for resumed, kept in zip(saved_weights(tmp_path / "resumed"), saved_weights(whole_run), strict=True):
        np.testing.assert_allclose(resumed, kept, rtol=0, atol=1e-6)


def test_same_seed_same_vocabulary_and_first_epoch_loss(song_file, tmp_path):
    config = small_config([song_file], train={"epochs": 1})
    train(config, tmp_path / "a", verbose=0)
    train(config, tmp_path / "b", verbose=0)
    assert (tmp_path / "a" / "vocabulary.txt").read_text() == (tmp_path / "b" / "vocabulary.txt").read_text()
    assert RunFolder(tmp_path / "a").read_history() == RunFolder(tmp_path / "b").read_history()


def test_a_run_folder_with_another_config_is_refused_unless_overwritten(song_file, tmp_path):
    run = tmp_path / "run"
    train(small_config([song_file], train={"epochs": 1}), run, verbose=0)
    changed = small_config([song_file], train={"epochs": 1}, model={"units": 8})
    with pytest.raises(RnnlmError, match=r"different config \(model\.units: 32 -> 8\); pass --overwrite"):
        train(changed, run, verbose=0)
    train(changed, run, overwrite=True, verbose=0)
    assert "units = 8" in (run / "config.toml").read_text()


def test_a_folder_that_is_not_a_run_is_refused(song_file, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff")
    with pytest.raises(RnnlmError, match="photos holds cat.jpg, which keras_rnnlm did not write; choose another --run-name"):
        train(small_config([song_file]), tmp_path / "photos", overwrite=True, verbose=0)
    assert (tmp_path / "photos" / "cat.jpg").exists()


def test_a_diverging_loss_stops_training_with_a_clear_error(song_file, tmp_path):
    config = small_config([song_file], train={"optimizer": "sgd", "learning_rate": 1e38, "clipnorm": 0.0, "epochs": 3})
    run = tmp_path / "run"
    with pytest.raises(RnnlmError, match=r"loss became NaN \(or infinite\) in epoch 1.*no model was saved.*lower train.learning_rate"):
        train(config, run, verbose=0)
    assert not (run / "backup").exists()
    assert not (run / "model.keras").exists()


def run_cli(capsys, *argv):
    status = cli.main("train", list(argv))
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    "make_input, extra, message",
    [
        (lambda d: d / "missing.txt", [], "corpus path .* does not exist"),
        (lambda d: write(d / "empty.txt", b""), [], "is empty"),
        (lambda d: write(d / "binary.txt", b"ab\x00\x01"), [], "looks binary"),
        (lambda d: write(d / "latin.txt", "café\n".encode("latin-1")), [], r"not valid UTF-8 \(byte offset 3\)"),
        (lambda d: write(d / "short.txt", b"too short\n"), [], "fewer than window_size"),
        (lambda d: write(d / "few.txt", b"one two three four five six seven\n"),
         ["--set", "data.window_size=2", "--set", "corpus.valid_fraction=0.05"], "validation split is empty"),
        (lambda d: write(d / "ok.txt", b"fine text\n" * 20), ["--set", "model.unitz=3"], "did you mean model.units"),
        (lambda d: write(d / "ok.txt", b"fine text\n" * 20), ["--set", "model.units=lots"], "must be an integer"),
        (lambda d: write(d / "ok.txt", b"fine text\n" * 20), ["--set", "model.dropout=1.5"], r"model\.dropout .* out of range"),
        (lambda d: write(d / "ok.txt", b"fine text\n" * 20), ["--set", "data.window_size=0"], "data.window_size"),
        (lambda d: write(d / "ok.txt", b"fine text\n" * 20), ["--set", "train.learning_rate=-1"], "learning_rate"),
        (lambda d: write(d / "ok.txt", b"fine text\n" * 20), ["--set", "data.mode=bptt"],
         r"only 54 training tokens, fewer than data.batch_size x data.bptt_steps = 64 x 35"),
        (lambda d: write(d / "ok.txt", b"fine text\n" * 20), ["--set", "data.mode=bptt", "--set", "model.tie_embeddings=true"],
         r"model.tie_embeddings needs model.embedding_dim \(16\) equal to model.units \(32\)"),
        (lambda d: write(d / "ok.txt", b"fine text\n" * 20), ["--set", "model.sampled_candidates=0"],
         r"model.sampled_candidates = 0 is out of range"),
        (lambda d: write(d / "ok.txt", b"fine text\n" * 20), ["--set", 'model.softmax="sampled"'],
         r"model.sampled_candidates = 1024 is not below the vocabulary's 5 tokens; set it lower, or model.softmax = \"full\""),
    ],
)
def test_bad_input_is_one_line_error_and_nothing_written(capsys, tmp_path, make_input, extra, message):
    corpus = make_input(tmp_path)
    out = tmp_path / "runs"
    status, err = run_cli(capsys, "--config", str(ROOT / "configs/tiny.toml"), "--corpus", str(corpus), "--output-dir", str(out), *extra)
    assert status == 2
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and "Traceback" not in err
    assert __import__("re").search(message, error_lines[0]), error_lines[0]
    assert not out.exists()


def test_gpu_without_a_gpu_is_a_clear_error(capsys, song_file, tmp_path):
    status, err = run_cli(capsys, "--config", str(ROOT / "configs/tiny.toml"), "--corpus", str(song_file),
                          "--output-dir", str(tmp_path / "runs"), "--device", "gpu")
    assert status == 2 and "error: --device gpu was asked for but TensorFlow sees no GPU" in err
    assert not (tmp_path / "runs").exists()


def write(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("level", ["word", "char"])
@pytest.mark.parametrize("sequences", ["stream", "lines"])
def test_both_modes_at_both_levels_through_the_cli(capsys, tmp_path, level, sequences):
    corpus = write(tmp_path / "lines.txt", ("\n".join(["the cat sat", "a dog ran", "we sang"] * 20) + "\n").encode())
    out = tmp_path / "runs"
    status, err = run_cli(capsys, "--config", str(ROOT / "configs/tiny.toml"), "--corpus", str(corpus), "--output-dir", str(out),
                          "--epochs", "1", "--set", f"corpus.level={level}", "--set", f"corpus.sequences={sequences}")
    assert status == 0, err
    assert f"({sequences} sequences)" in err and "sample after epoch 1:" in err
    assert (out / "tiny" / "model.keras").is_file()


@pytest.mark.slow  # half a minute: the command line's whole run, export included
def test_cli_end_to_end_on_the_tiny_config(song_file, tmp_path, capsys):
    """The real command, in a fresh process, as a user runs it (exporting at the end); then
    the evaluation command's entry point."""
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "keras_rnnlm.train", "--config", str(ROOT / "configs/tiny.toml"),
               "--corpus", str(song_file), "--output-dir", str(out), "--export"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "vocabulary: 18 tokens" in result.stderr and "placement: one device, /cpu:0" in result.stderr
    assert "sample after epoch 2:" in result.stderr and "done: best epoch" in result.stderr
    assert (out / "tiny" / "model.keras").is_file()
    assert (out / "tiny" / "saved_model" / "saved_model.pb").is_file() and "exported" in result.stderr
    # Our own log lines only: TensorFlow's start-up notices are dropped, e.g. "failed call to cuInit".
    assert not [line for line in result.stderr.splitlines() if NOTICES.search(line.encode()) or line[:5] in ("I0000", "E0000")]
    verbose = subprocess.run([sys.executable, "-m", "keras_rnnlm.evaluate", "--verbose", "--model", str(out / "tiny"),
                              "--text", str(song_file)], capture_output=True, text=True, timeout=600)
    assert verbose.returncode == 0 and NOTICES.search(verbose.stderr.encode())  # --verbose shows them


    assert cli.main("evaluate", ["--model", str(out / "tiny"), "--text", str(song_file)]) == 0
    printed = capsys.readouterr().out
    assert f"tokens evaluated: {len(song_file.read_text().split()) + 80:,} (each token from the 5 before it)" in printed
    assert "perplexity:" in printed and "bits/token" in printed
    assert cli.main("evaluate", ["--model", str(tmp_path / "nope"), "--text", str(song_file)]) == 2
    assert "not a keras_rnnlm run" in capsys.readouterr().err


def test_keras_may_run_every_batch_hook_of_the_run_beside_the_steps(song_file, tmp_path, monkeypatch):
    """Keras runs the batch hooks in a thread only if every callback's are the base
    class's or async-safe; one that is neither makes every step wait for its logs."""
    from keras_rnnlm import train as train_module

    passed, fit = [], train_module.fit
    monkeypatch.setattr(train_module, "fit", lambda trainer, data, strategy, cluster, callbacks, *args, **kwargs: (
        passed.extend(callbacks), fit(trainer, data, strategy, cluster, callbacks, *args, **kwargs))[1])
    config = small_config([song_file], train={"epochs": 1, "tensorboard": True, "sample_length": 3, "weight_averaging": 0.9,
                                              "reduce_lr_patience": 1})
    train(config, tmp_path / "run", verbose=2)
    assert len(passed) >= 10
    for callback in passed:
        for hook in ("on_batch_end", "on_train_batch_end"):
            stock = getattr(type(callback), hook) is getattr(keras.callbacks.Callback, hook)
            assert stock or getattr(callback, "async_safe", False), f"{type(callback).__name__}.{hook}"
