import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import SONG, small_config
from keras_rnnlm import cli
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.generate import Generator, latest_run, main
from keras_rnnlm.tokenizer import Tokenizer
from keras_rnnlm.train import train
from keras_rnnlm.vocab import Vocabulary

NAMES = ["anna", "bob", "emma", "otto", "hannah", "ava", "elle", "ada"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny trained runs: a word model that has memorized a song and a character
    model of a list of names."""
    folder = tmp_path_factory.mktemp("runs")
    (folder / "song.txt").write_text(SONG * 40)
    (folder / "names.txt").write_text("\n".join(NAMES * 30) + "\n")
    train(small_config([folder / "song.txt"], train={"epochs": 12}), folder / "out" / "song", verbose=0)
    names = small_config([folder / "names.txt"], corpus={"level": "char"}, data={"char_window_size": 8}, train={"epochs": 15})
    train(names, folder / "out" / "names", verbose=0)
    lines = small_config([folder / "names.txt"], corpus={"level": "char", "sequences": "lines"},
                         data={"char_window_size": 8}, train={"epochs": 15})
    train(lines, folder / "out" / "names_lines", verbose=0)
    return folder / "out"


@pytest.fixture(scope="module")
def song(runs):
    return Generator.from_run(runs / "song")


def test_greedy_continues_a_memorized_song_word_for_word(song):
    (text,) = song.generate(["cause baby now we got"], num_tokens=12, strategy="greedy")
    assert text == "cause baby now we got bad blood\nyou know it used to be mad love\n"


def test_short_and_empty_prompts_are_left_padded_like_a_file_start(song):
    short, empty = song.generate(["cause baby", ""], num_tokens=3, strategy="greedy")
    assert short == "cause baby now we got"
    assert empty == "cause baby now"


def test_max_lines_stops_at_the_line_break(song):
    (text,) = song.generate(["cause baby now we got"], num_tokens=100, strategy="greedy", max_lines=2)
    assert text == "cause baby now we got bad blood\nyou know it used to be mad love\n"


def test_seeded_sampling_is_reproducible(song):
    first = song.generate(["you know"] * 3, num_tokens=10, temperature=5.0, seed=7)
    assert song.generate(["you know"] * 3, num_tokens=10, temperature=5.0, seed=7) == first
    assert song.generate(["you know"] * 3, num_tokens=10, temperature=5.0, seed=8) != first
    assert len(set(first)) > 1  # The samples of one batch differ from each other.


def test_a_character_model_writes_one_name_per_sample_and_stops_at_the_line_end(runs):
    names = Generator.from_run(runs / "names")
    (first,) = names.generate([""], num_tokens=20, strategy="greedy", max_lines=1)
    assert first == "anna\n"
    samples = names.generate([""] * 10, num_tokens=20, temperature=0.5, seed=3, max_lines=1)
    for sample in samples:
        assert sample.endswith("\n") and "\n" not in sample[:-1] and len(sample) < 20


def test_a_line_mode_model_writes_independent_names_that_stop_at_the_end_token(runs):
    names = Generator.from_run(runs / "names_lines")
    assert names.line_mode
    samples = names.generate([""] * 20, num_tokens=30, temperature=0.8, seed=2)  # max_lines defaults to 1
    assert len(samples) == 20
    for sample in samples:
        assert sample.endswith("\n") and "\n" not in sample[:-1]
    assert sum(sample.rstrip("\n") in NAMES for sample in samples) >= 15  # the list is learned
    (completed,) = names.generate(["hann"], num_tokens=30, strategy="greedy")
    assert completed == "hannah\n"


def fixed_generator(probabilities):
    """A generator over a stand-in model that always predicts ``probabilities``."""
    table = tf.constant([probabilities], tf.float32)
    model = lambda windows, training=False: tf.tile(table, [tf.shape(windows)[0], 1])  # noqa: E731
    tokens = ["<pad>", "<unk>", "<eol>"] + [f"w{i}" for i in range(len(probabilities) - 3)]
    return Generator(model, Vocabulary(tokens), Tokenizer(), window_size=2)


def draws(generator, temperature=1.0, top_k=0, top_p=1.0, seed=3):
    ids = generator.generate_ids(tf.zeros((64, 2), tf.int32), 40, temperature, top_k, top_p, seed, 0).numpy()
    return set(np.unique(ids).tolist())


TABLE = [0.3, 0.3, 0.02, 0.2, 0.12, 0.06]  # pad and unk likeliest; then w0 (id 3), w1, w2, eol


def test_padding_and_unk_are_never_generated():
    assert draws(fixed_generator(TABLE)) == {2, 3, 4, 5}


def test_greedy_ignores_the_temperature(song):
    assert song.generate(["bad blood\nyou know"], 3, strategy="greedy", temperature=0) == ["bad blood\nyou know it used to"]


def test_greedy_is_the_argmax_and_near_zero_temperature_equals_it():
    generator = fixed_generator(TABLE)
    assert draws(generator, temperature=0.0) == {3}
    assert draws(generator, temperature=1e-3) == {3}


def test_top_k_never_leaves_the_k_most_likely():
    generator = fixed_generator(TABLE)
    assert draws(generator, top_k=1) == {3}
    assert draws(generator, top_k=2) == {3, 4}
    assert draws(generator, top_k=3) == {3, 4, 5}


def test_top_p_keeps_exactly_the_nucleus():
    # Without pad and unk: w0 0.5, w1 0.3, w2 0.15, eol 0.05.
    generator = fixed_generator(TABLE)
    assert draws(generator, top_p=0.5) == {3}
    assert draws(generator, top_p=0.7) == {3, 4}
    assert draws(generator, top_p=0.85) == {3, 4, 5}
    assert draws(generator, top_p=0.96) == {2, 3, 4, 5}


def test_temperature_and_top_k_compose():
    flat = fixed_generator([0.0, 0.0, 0.25, 0.25, 0.25, 0.25])
    assert draws(flat, temperature=2.0, top_k=4) == {2, 3, 4, 5}
    hot = draws(fixed_generator(TABLE), temperature=3.0, top_k=2)
    assert hot == {3, 4}


def generate_cli(capsys, *argv):
    status = cli.run(main, list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_prints_samples_and_warns_about_unknown_words(runs, capsys):
    status, out, err = generate_cli(capsys, "--model", str(runs / "song"), "--prompt", "cause baby now we got",
                                    "--words", "2", "--strategy", "greedy", "--num-samples", "2")
    assert status == 0
    assert out == "cause baby now we got bad blood\n\ncause baby now we got bad blood\n"
    status, out, err = generate_cli(capsys, "--model", str(runs / "song"), "--prompt", "cause zebra", "--words", "3")
    assert status == 0 and "warning: not in the vocabulary, read as <unk>: zebra" in err


def test_cli_names_demo_prints_one_name_a_line(runs, capsys):
    status, out, _ = generate_cli(capsys, "--model", str(runs / "names"), "--num-samples", "10", "--max-lines", "1",
                                  "--words", "30", "--temperature", "0.7")
    assert status == 0
    assert len(out.splitlines()) == 10 and all(name.isalpha() for name in out.splitlines())


def test_cli_interactive_reads_prompts_until_end_of_input(runs, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("cause baby now we got\nyou know it used to\n"))
    status, out, _ = generate_cli(capsys, "--model", str(runs / "song"), "--interactive", "--words", "2", "--strategy", "greedy")
    assert status == 0
    assert out == "cause baby now we got bad blood\nyou know it used to be mad\n"


def test_default_model_is_the_most_recent_run(runs):
    (runs / "song" / "model.keras").touch()
    assert latest_run(runs) == runs / "song"
    with pytest.raises(RnnlmError, match="no trained run in"):
        latest_run(runs / "song")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--temperature", "0"], "temperature must be above 0"),
        (["--temperature", "-1"], "temperature must be above 0"),
        (["--top-k", "0"], "top-k must be between 1 and the vocabulary size 18"),
        (["--top-k", "19"], "top-k must be between 1 and the vocabulary size 18"),
        (["--top-p", "0"], r"top-p must be in \(0, 1\]"),
        (["--top-p", "1.5"], r"top-p must be in \(0, 1\]"),
        (["--words", "0"], "between 1 and 100,000, got 0"),
        (["--words", "-5"], "between 1 and 100,000, got -5"),
        (["--words", "1000000"], "between 1 and 100,000, got 1,000,000"),
        (["--num-samples", "0"], "--num-samples must be at least 1"),
    ],
)
def test_bad_settings_are_one_line_errors(runs, capsys, argv, message):
    status, out, err = generate_cli(capsys, "--model", str(runs / "song"), *argv)
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and __import__("re").search(message, err), err


def test_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path, capsys):
    status, _, err = generate_cli(capsys, "--model", str(tmp_path))
    assert status == 2 and "is not a keras_rnnlm run" in err
    status, _, err = generate_cli(capsys, "--model", str(tmp_path / "missing"))
    assert status == 2 and "is not a keras_rnnlm run" in err


def test_same_seed_same_text_across_processes(runs):
    def run(seed):
        command = [sys.executable, "-m", "keras_rnnlm.generate", "--model", str(runs / "song"), "--prompt", "you know",
                   "--words", "25", "--temperature", "3", "--num-samples", "3", "--seed", str(seed)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    first = run(11)
    assert run(11) == first
    assert run(12) != first
