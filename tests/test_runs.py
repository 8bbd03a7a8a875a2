import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import small_config
from keras_rnnlm import cli
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.generate import Generator
from keras_rnnlm.runs import RunFolder, _upgraded
from keras_rnnlm.sampling import Sampling
from keras_rnnlm.train import train

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


def test_one_process_trains_into_a_folder_at_a_time_and_a_killed_ones_lock_is_taken_over(tmp_path, song_file):
    run = RunFolder(tmp_path / "run")
    with run.lock():
        with pytest.raises(RnnlmError, match=rf"run is being trained by process {os.getpid()} on .*; wait for it"):
            with run.lock():
                pass
        with pytest.raises(RnnlmError, match="is being trained by process"):
            train(small_config([song_file]), run.path, verbose=0)
        assert not run.path.exists()  # the refused run wrote nothing
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from keras_rnnlm.runs import RunFolder
        with RunFolder({str(run.path)!r}).lock():
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    with pytest.raises(RnnlmError, match=rf"is being trained by process {holder.pid}"):
        with run.lock():
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / ".run.keras_rnnlm-lock").exists()  # left behind by the killed process: stale
    with run.lock():  # taken over
        pass
    assert not (tmp_path / ".run.keras_rnnlm-lock").exists()


def damaged_copy(tmp_path, run, name, damage):
    copy = shutil.copytree(run, tmp_path / "damaged")
    damage(copy / name)
    return copy


@pytest.mark.parametrize(
    "name, damage, message",
    [
        ("model.keras", lambda path: path.write_bytes(path.read_bytes()[:2000]), r"model.keras is damaged: it is not a whole .keras archive"),
        ("model.keras", lambda path: path.unlink(), r"has no model.keras yet"),
        ("vocabulary.txt", lambda path: path.write_text("<pad>\nhello\n"), r"vocabulary.txt is damaged \(a vocabulary must start with"),
        ("vocabulary.txt", lambda path: path.write_text(path.read_text()[: len(path.read_text()) // 2]),
         r"vocabulary.txt lists \d+ tokens but the model scores 18"),
        ("vocabulary.txt", lambda path: path.write_bytes(b"<pad>\n<unk>\n<eol>\n\xff\xfe\n"), r"vocabulary.txt is damaged"),
        ("config.toml", lambda path: path.write_text("[model\nunits = 3\n"), r"config.toml is not valid TOML"),
        ("config.toml", lambda path: path.unlink(), r"is not a keras_rnnlm run \(no config.toml\)"),
    ],
)
def test_a_damaged_file_is_named_in_one_line_by_every_command(tmp_path, song_run, song_file, capsys, name, damage, message):
    run = damaged_copy(tmp_path, song_run, name, damage)
    for command, argv in (("generate", ["--model", str(run)]), ("evaluate", ["--model", str(run), "--text", str(song_file)]),
                          ("export", ["--model", str(run), "--out", str(tmp_path / "exported")])):
        assert cli.main(command, argv) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "exported").exists()


def test_a_damaged_history_is_named_when_the_run_resumes(tmp_path, song_file):
    config = small_config([song_file], train={"epochs": 2})
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "run", extra_callbacks=[InterruptAfterFirstEpoch()], verbose=0)
    history = tmp_path / "run" / "history.csv"
    header, row = history.read_text().splitlines()
    history.write_text(f"{header}\n{header}\n")  # a second header where the row was, as two runs at once once wrote
    with pytest.raises(RnnlmError, match=r"history.csv is damaged \(a row that is not numbers\); delete it to keep training"):
        train(config, tmp_path / "run", verbose=0)


def test_a_damaged_backup_is_named_when_the_run_resumes(tmp_path, song_file):
    config = small_config([song_file], train={"epochs": 2})
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "run", extra_callbacks=[InterruptAfterFirstEpoch()], verbose=0)
    backup = tmp_path / "run" / "backup" / "latest.npz"
    backup.write_bytes(backup.read_bytes()[:100])
    with pytest.raises(RnnlmError, match=r"the backup .*latest.npz is damaged; train again with --overwrite to start the run from its first epoch"):
        train(config, tmp_path / "run", verbose=0)


class InterruptAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt
