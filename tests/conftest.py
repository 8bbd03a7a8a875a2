"""Shared fixtures: small corpora written on the fly and small configs that train in seconds."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from keras_rnnlm.config import Config, config_from_dict, config_to_dict

SONG = "cause baby now we got bad blood\nyou know it used to be mad love\n"


def small_config(corpus_paths, **sections) -> Config:
    """A config for a seconds-long run on ``corpus_paths``; ``sections`` override values,
    e.g. ``small_config(paths, train={"epochs": 3})``."""
    values = config_to_dict(Config())
    values["name"] = "test"
    values["corpus"]["paths"] = [str(path) for path in corpus_paths]
    values["data"].update(batch_size=16)
    values["model"].update(embedding_dim=16, units=32, dropout=0.0)
    values["train"].update(epochs=2, learning_rate=0.01, tensorboard=False, sample_length=0)
    for section, entries in sections.items():
        values[section].update(entries)
    return config_from_dict(values)


@pytest.fixture
def song_file(tmp_path):
    """A repetitive two-line song: every next word is determined by the five before it."""
    path = tmp_path / "song.txt"
    path.write_text(SONG * 40, encoding="utf-8")
    return path
