"""Starting a run from a trained one (train.init_from, --init-from): the run's
tokenization and architecture, its vocabulary extended, its weights the start."""

import json

import numpy as np
import pytest

from keras_rnnlm import cli
from keras_rnnlm.config import load_config
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.model import load_model
from keras_rnnlm.runs import RunFolder
from keras_rnnlm.vocab import Vocabulary


def test_a_fine_tune_takes_the_runs_architecture_and_refuses_to_contradict_it(bptt_run):
    started_from = RunFolder(bptt_run).load_config()
    config = load_config(None, [f"train.init_from={bptt_run}", "model.dropout=0.4"])  # a fine-tune may change dropout
    assert (config.data.mode, config.model.units, config.model.tie_embeddings) == (
        started_from.data.mode, started_from.model.units, started_from.model.tie_embeddings)
    assert config.model.dropout == 0.4 and config.data.batch_size == started_from.data.batch_size
    assert config.train.learning_rate == started_from.train.learning_rate
    assert load_config(None, [f"train.init_from={bptt_run}", "train.learning_rate=0.5"]).train.learning_rate == 0.5
    with pytest.raises(RnnlmError, match=r"^model\.units = 64 contradicts the model train\.init_from starts from"):
        load_config(None, [f"train.init_from={bptt_run}", "model.units=64"])
    with pytest.raises(RnnlmError, match="is not a run folder"):
        load_config(None, ["train.init_from=no_such_run"])


def test_a_fine_tune_starts_from_the_runs_weights_with_its_vocabulary_extended(bptt_run, tmp_path, capfd):
    text = tmp_path / "new.txt"
    text.write_text("the dog sat on the mat\nthe dog sat on the log\n" * 20)  # "dog" and "log" are new
    assert cli.main("train", ["--init-from", str(bptt_run), "--corpus", str(text), "--run-name", "dog",
                              "--output-dir", str(tmp_path), "--epochs", "1"]) == 0
    log = capfd.readouterr().err
    assert "2 tokens added to the" in log and f"fine-tuning {bptt_run}" in log
    base, extended = Vocabulary.load(bptt_run / "vocabulary.txt"), Vocabulary.load(tmp_path / "dog" / "vocabulary.txt")
    assert extended.tokens[:len(base)] == base.tokens and set(extended.tokens[len(base):]) == {"dog", "log"}
    summary = json.loads((tmp_path / "dog" / "summary.json").read_text())
    assert summary["init_from"]["run"] == str(bptt_run.resolve()) and len(summary["init_from"]["model_sha256"]) == 64
    # It trained from the run's weights: the LSTM's kernel moved only a little from them.
    started, tuned = (load_model(path / "model.keras").get_layer("lstm_1").get_weights()[0] for path in (bptt_run, tmp_path / "dog"))
    assert 0 < np.abs(tuned - started).max() < 0.1 * np.abs(started).max()
    capfd.readouterr()
    assert cli.main("train", ["--init-from", str(bptt_run), "--corpus", str(text), "--set", "model.layers=3",
                              "--output-dir", str(tmp_path)]) == 2
    assert "model.layers = 3 contradicts" in capfd.readouterr().err


@pytest.mark.slow
def test_keep_vocabulary_reads_new_words_as_unk(bptt_run, tmp_path):
    text = tmp_path / "new.txt"
    text.write_text("the dog sat on the mat\n" * 40)
    assert cli.main("train", ["--init-from", str(bptt_run), "--corpus", str(text), "--run-name", "kept", "--keep-vocabulary",
                              "--output-dir", str(tmp_path), "--epochs", "1"]) == 0
    assert Vocabulary.load(tmp_path / "kept" / "vocabulary.txt") == Vocabulary.load(bptt_run / "vocabulary.txt")
