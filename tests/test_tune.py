"""python -m keras_rnnlm.tune: the search file, a tiny search end to end through the CLI,
a killed search continued, the seed's trial sequence, and the errors."""

import csv
import importlib.util
import os
import signal
import subprocess
import sys
import time

import keras
import pytest
from conftest import small_config

from keras_rnnlm import cli
from keras_rnnlm.config import config_to_toml, load_config
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.generate import Generator
from keras_rnnlm.sampling import Sampling
from keras_rnnlm.search_space import read_search
from keras_rnnlm.train import train
from keras_rnnlm.tune import Search, _tuner

SEARCH = 'model.units = [16, 32]\ntrain.learning_rate = {min = 0.003, max = 0.03, log = true}\n'


@pytest.fixture(scope="module")
def search_files(tmp_path_factory):
    """A tiny config (2 epochs of a small model on the song), its search file, and a
    command line that searches 2 trials at random."""
    folder = tmp_path_factory.mktemp("tune")
    song = folder / "song.txt"
    song.write_text("cause baby now we got bad blood\nyou know it used to be mad love\n" * 40, encoding="utf-8")
    (folder / "tiny.toml").write_text(config_to_toml(small_config([song], data={"batch_size": 64})), encoding="utf-8")
    (folder / "search.toml").write_text(SEARCH, encoding="utf-8")
    return folder


def tune_arguments(folder, output, trials=2):
    return ["--config", str(folder / "tiny.toml"), "--search", str(folder / "search.toml"), "--strategy", "random",
            "--max-trials", str(trials), "--max-minutes", "10", "--output-dir", str(output), "--run-name", "search"]


def trials_table(tuning):
    with open(tuning / "trials.csv", encoding="utf-8") as file:
        return [{key: row[key] for key in ("trial", "status", "model.units", "train.learning_rate", "val_loss", "epochs")}
                for row in csv.DictReader(file)]


@pytest.fixture(scope="module")
def searched(search_files, tmp_path_factory):
    """An uninterrupted 2-trial search, run through the CLI."""
    output = tmp_path_factory.mktemp("searched")
    assert cli.main("tune", tune_arguments(search_files, output)) == 0
    return output / "search"


def test_a_tiny_search_keeps_a_table_the_best_config_and_the_best_model(searched):
    table = trials_table(searched)
    assert [row["trial"] for row in table] == ["0", "1"] and {row["status"] for row in table} == {"completed"}
    assert len({(row["model.units"], row["train.learning_rate"]) for row in table}) == 2
    assert (searched / "trials.png").stat().st_size > 0
    best = min(table, key=lambda row: float(row["val_loss"]))
    # The best config trains again, from the text, to the trial's figure (same seed).
    config = load_config(searched / "best.toml")
    assert config.model.units == int(best["model.units"]) and config.train.learning_rate == float(best["train.learning_rate"])
    assert not config.corpus.paths[0].startswith(str(searched)), "best.toml reads the original text"
    again = train(config, searched.parent / "again", verbose=0)
    assert again["val_loss"] == pytest.approx(float(best["val_loss"]), rel=1e-5)
    # best/ is the best trial's run folder: its model loads with Keras alone, has the trial's
    # size and is the trial's own (the same weights), and generates.
    model = keras.saving.load_model(searched / "best" / "model.keras")
    assert model.get_layer("lstm_1").units == int(best["model.units"])
    trial = keras.saving.load_model(searched / "trials" / best["trial"] / "model.keras")
    assert all((a == b).all() for a, b in zip(model.get_weights(), trial.get_weights(), strict=True))
    assert Generator.from_run(searched / "best").generate(["cause baby"], 5, Sampling.from_strategy("greedy"), seed=0)[0]


@pytest.mark.slow
def test_a_killed_search_continues_where_it_stopped_with_the_same_trials(search_files, searched, tmp_path):
    """Killed with SIGKILL once the second of 2 trials has started, then run again with the
    same command: the same trials (the seed's), and the same figures as the uninterrupted
    search's first two."""
    command = [sys.executable, "-m", "keras_rnnlm.tune", *tune_arguments(search_files, tmp_path, trials=2)]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    second = tmp_path / "search" / "trials" / "1" / "history.csv"
    deadline = time.time() + 120
    while not second.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(trials_table(tmp_path / "search")) < 2
    again = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "continuing the search" in again.stderr
    continued, uninterrupted = trials_table(tmp_path / "search"), trials_table(searched)[:2]
    assert [{**row, "val_loss": None} for row in continued] == [{**row, "val_loss": None} for row in uninterrupted]
    for mine, theirs in zip(continued, uninterrupted, strict=True):
        assert float(mine["val_loss"]) == pytest.approx(float(theirs["val_loss"]), rel=1e-5)


@pytest.mark.parametrize("strategy", ["random", "bayesian", "hyperband"])
def test_the_seed_decides_the_sequence_of_trials(search_files, tmp_path, strategy):
    def first_trials(seed, name):
        config = load_config(search_files / "tiny.toml", [f"train.seed={seed}", "train.epochs=9"])
        search = Search(config, read_search(search_files / "search.toml"), tmp_path / name, strategy, False)
        tuner = _tuner(search, strategy, 10)
        return [tuner.oracle.create_trial(f"tuner{number}").hyperparameters.values for number in range(4)]

    assert first_trials(1, "a") == first_trials(1, "b")
    assert first_trials(1, "c") != first_trials(2, "d")


def test_a_trial_whose_values_do_not_go_together_fails_alone_in_one_line(search_files, tmp_path, capsys):
    """Searched through the CLI: tied embeddings with units 32 fail (embedding_dim is 16 in
    the tiny config), with 16 they train; KerasTuner's choice of booleans comes back as 0
    or 1, and a failed trial prints the config's message, not a traceback."""
    (tmp_path / "tie.toml").write_text("model.tie_embeddings = [true]\nmodel.units = [16, 32]\n", encoding="utf-8")
    arguments = tune_arguments(search_files, tmp_path)
    arguments[arguments.index("--search") + 1] = str(tmp_path / "tie.toml")
    assert cli.main("tune", arguments) == 0
    table = {row["model.units"]: row for row in csv.DictReader(open(tmp_path / "search" / "trials.csv", encoding="utf-8"))}
    assert table["16"]["status"] == "completed" and table["16"]["model.tie_embeddings"] == "True"
    assert table["32"]["status"] == "failed" and "model.tie_embeddings needs model.embedding_dim" in table["32"]["note"]
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("search, message", [
    ("model.unitz = [16, 32]", "unknown config key model.unitz; did you mean model.units?"),
    ("model.dropout = [0.1, 1.5]", "model.dropout = 1.5 is out of range; it must be in [0, 1)"),
    ("model.units = {min = 16, max = 64.5}", "max must be an integer, got 64.5"),
    ("model.cell = {min = 1, max = 2}", "model.cell is not a number, so it takes a list of choices"),
    ('model.units = ["big"]', "model.units must be an integer, got 'big'"),
    ("train.learning_rate = {min = 0.0, max = 0.1, log = true}", "log = true needs min above 0"),
    ("model.units = {min = 64, max = 16}", "min (64) must be below max (16)"),
    ("model.units = 64", "must be a list of choices or an interval"),
    ('name = ["a", "b"]', "name cannot be searched"),
    ("", "names no config key to search"),
])
def test_a_bad_search_file_is_one_line_naming_the_key(search_files, tmp_path, search, message):
    path = tmp_path / "search.toml"
    path.write_text(search, encoding="utf-8")
    with pytest.raises(RnnlmError, match="search file .*" + message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        read_search(path)


def test_values_are_checked_each_alone_and_a_combination_is_left_to_its_trial(tmp_path):
    """Each value is checked as its key takes it; whether values go together (tied
    embeddings need units equal to embedding_dim) is the trial's to find out."""
    path = tmp_path / "search.toml"
    path.write_text("model.tie_embeddings = [true, false]\nmodel.units = [32, 64]\ntrain.learning_rate = [1, 0.5]\n",
                    encoding="utf-8")
    dimensions = read_search(path)
    assert [dimension.key for dimension in dimensions] == ["model.tie_embeddings", "model.units", "train.learning_rate"]
    assert dimensions[2].kind is float


def test_tuning_without_keras_tuner_names_the_install_command(search_files, tmp_path, monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "keras_tuner" else find_spec(name, *rest))
    assert cli.main("tune", tune_arguments(search_files, tmp_path)) == 2
    assert capsys.readouterr().err.strip() == (
        'error: tuning needs keras-tuner, which is not installed; install it with pip install ".[tune]"')
