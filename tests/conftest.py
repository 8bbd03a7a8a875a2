"""Shared fixtures: small corpora written on the fly, small configs that train in seconds,
and trained runs that the whole test session shares (trained once, by whichever worker
process first needs one, never changed by a test: a test that writes into a run copies
it first)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import pytest

from keras_rnnlm.config import Config, config_from_dict, config_to_dict

SONG = "cause baby now we got bad blood\nyou know it used to be mad love\n"
# Which word ends a line alternates: it is decided by the word 7 tokens back, and the
# pattern's period (14 tokens) is longer than the bptt step of the run below (10).
ALTERNATING = "the cat sat on the mat\nthe cat sat on the hat\n"
NAMES = ["anna", "bob", "emma", "otto", "hannah", "ava", "elle", "ada"]


def small_config(corpus_paths, **sections) -> Config:
    """A config for a seconds-long run on ``corpus_paths``; ``sections`` override values,
    e.g. ``small_config(paths, train={"epochs": 3})``. Precision is float32, so which
    path a test takes does not depend on the machine; bfloat16 has tests of its own."""
    values = config_to_dict(Config())
    values["name"] = "test"
    values["corpus"]["paths"] = [str(path) for path in corpus_paths]
    values["data"].update(batch_size=16)
    values["model"].update(embedding_dim=16, units=32, dropout=0.0)
    values["train"].update(epochs=2, learning_rate=0.01, tensorboard=False, sample_length=0, precision="float32",
                           fit_cache=False)
    for section, entries in sections.items():
        values[section].update(entries)
    return config_from_dict(values)


@pytest.fixture(autouse=True)
def outside_the_checkout(tmp_path, monkeypatch):
    """Every test runs in its own empty folder, so a relative default (saved_models/, the
    output of a mistaken command) can never write into the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def song_file(tmp_path):
    """A repetitive two-line song: every next word is determined by the five before it."""
    path = tmp_path / "song.txt"
    path.write_text(SONG * 40, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def shared(tmp_path_factory, worker_id):
    """A folder every worker process of the session sees (pytest-xdist runs one per core)."""
    base = tmp_path_factory.getbasetemp()
    folder = (base if worker_id == "master" else base.parent) / "shared"
    folder.mkdir(exist_ok=True)
    return folder


@contextlib.contextmanager
def held(path):
    """An exclusive lock on ``path`` for the block: one worker process at a time."""
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def corpora(shared):
    """The song, a list of names and the alternating lines, written once for the session."""
    folder = shared / "corpora"
    with held(shared / "corpora.lock"):
        if not folder.exists():
            folder.mkdir()
            (folder / "song.txt").write_text(SONG * 40, encoding="utf-8")
            (folder / "names.txt").write_text("\n".join(NAMES * 30) + "\n", encoding="utf-8")
            (folder / "alternating.txt").write_text(ALTERNATING * 60, encoding="utf-8")
    return folder


def trained_once(shared, name, config) -> Path:
    """The run ``name`` of ``config``, trained by the first worker process that asks."""
    from keras_rnnlm.train import train

    run = shared / "runs" / name
    with held(shared / f"{name}.lock"):
        if not (run / "summary.json").exists():
            train(config, run, overwrite=True, verbose=0)
    return run


@pytest.fixture(scope="session")
def song_run(corpora, shared):
    """A word model that has memorized the song (stream mode, with a sample every epoch)."""
    return trained_once(shared, "song", small_config([corpora / "song.txt"], train={"epochs": 12, "sample_length": 8}))


@pytest.fixture(scope="session")
def names_run(corpora, shared):
    """A character model of the names in line mode: every name its own sequence."""
    config = small_config([corpora / "names.txt"], corpus={"level": "char", "sequences": "lines"},
                          data={"window_size": 8}, train={"epochs": 15})
    return trained_once(shared, "names", config)


@pytest.fixture(scope="session")
def bptt_run(corpora, shared):
    """A bptt-mode word model with tied embeddings, trained on the alternating lines."""
    config = small_config([corpora / "alternating.txt"], data={"mode": "bptt", "batch_size": 2, "bptt_steps": 10},
                          model={"embedding_dim": 32, "tie_embeddings": True},
                          train={"epochs": 30, "early_stopping_patience": 0, "sample_length": 8, "fit_cache": True})
    return trained_once(shared, "bptt", config)


@pytest.fixture(scope="session")
def char_bptt_run(corpora, shared):
    """A bptt-mode character model of the names: two GRU layers with layer normalization."""
    config = small_config([corpora / "names.txt"], corpus={"level": "char"}, data={"mode": "bptt", "batch_size": 4, "bptt_steps": 8},
                          model={"cell": "gru", "layers": 2, "layer_norm": True}, train={"epochs": 1})
    return trained_once(shared, "char_bptt", config)


# Runs a command as `python -m` does, then records whether TensorFlow was imported and the
# exit status in the file named by its first argument (stdout and stderr stay the command's).
AS_MAIN = textwrap.dedent("""
    import runpy, sys
    record, module, *sys.argv[1:] = sys.argv[1:]
    sys.argv[0] = module
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as exit:
        status = exit.code
    with open(record, "w") as file:
        file.write(f"{status} {'tensorflow' in sys.modules}")
""")


def run_as_main(tmp_path, module, *argv):
    record = tmp_path / "record.txt"
    result = subprocess.run([sys.executable, "-c", AS_MAIN, str(record), module, *map(str, argv)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    status, tensorflow_loaded = record.read_text().split()
    return int(status), tensorflow_loaded == "True", result.stdout, result.stderr
