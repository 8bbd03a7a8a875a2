import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_rnnlm.generate import Generator
from keras_rnnlm.runs import RunFolder, _upgraded
from keras_rnnlm.sampling import Sampling

SAVED_BY_0_1_0 = Path(__file__).resolve().parent / "data" / "run_saved_by_0.1.0"


def test_a_run_saved_by_an_earlier_version_loads_as_stock_keras_and_writes_as_before(tmp_path):
    """A character run of 0.1.0: its config had data.char_window_size, its model a
    keras_rnnlm LSTM subclass. expected.json holds what 0.1.0 computed with it."""
    run = shutil.copytree(SAVED_BY_0_1_0, tmp_path / "run")
    expected = json.loads((run / "expected.json").read_text())
    config = RunFolder(run).load_config()
    assert config.corpus.level == "char" and config.data.window_size == 8
    generator = Generator.from_run(run)
    assert [type(layer) for layer in generator.model.layers][1] is keras.layers.LSTM
    np.testing.assert_allclose(generator.model.predict(np.array(expected["windows"]), verbose=0),
                               expected["probabilities"], atol=1e-6)
    assert generator.generate(["cause baby"], 12, Sampling(temperature=0.0)) == expected["greedy"]


@pytest.mark.parametrize("mixed, precision", [(True, "mixed"), (False, "float32")])
def test_earlier_run_configs_are_read_in_todays_keys(mixed, precision):
    word = _upgraded({"corpus": {"level": "word"}, "data": {"window_size": 5, "char_window_size": 16},
                      "train": {"mixed_precision": mixed}})
    assert word == {"corpus": {"level": "word"}, "data": {"window_size": 5}, "train": {"precision": precision}}
    char = _upgraded({"corpus": {"level": "char"}, "data": {"window_size": 5, "char_window_size": 16}})
    assert char["data"] == {"window_size": 16}
