import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import NAMES
from keras_rnnlm import cli
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.generate import Generator
from keras_rnnlm.runs import latest_run
from keras_rnnlm.sampling import Sampling
from keras_rnnlm.tokenizer import Tokenizer
from keras_rnnlm.vocab import Vocabulary

GREEDY = Sampling(temperature=0.0)


@pytest.fixture(scope="module")
def song(song_run):
    return Generator.from_run(song_run)


@pytest.fixture(scope="module")
def names(names_run):
    return Generator.from_run(names_run)


def test_greedy_continues_a_memorized_song_word_for_word(song):
    (text,) = song.generate(["cause baby now we got"], num_tokens=12, sampling=GREEDY)
    assert text == "cause baby now we got bad blood\nyou know it used to be mad love\n"


def test_short_and_empty_prompts_are_left_padded_like_a_file_start(song):
    short, empty = song.generate(["cause baby", ""], num_tokens=3, sampling=GREEDY)
    assert short == "cause baby now we got"
    assert empty == "cause baby now"


def test_max_lines_stops_at_the_line_break(song):
    (text,) = song.generate(["cause baby now we got"], num_tokens=100, sampling=GREEDY, max_lines=2)
    assert text == "cause baby now we got bad blood\nyou know it used to be mad love\n"


def test_seeded_sampling_is_reproducible(song):
    first = song.generate(["you know"] * 3, num_tokens=10, sampling=Sampling(temperature=5.0), seed=7)
    assert song.generate(["you know"] * 3, num_tokens=10, sampling=Sampling(temperature=5.0), seed=7) == first
    assert song.generate(["you know"] * 3, num_tokens=10, sampling=Sampling(temperature=5.0), seed=8) != first
    assert len(set(first)) > 1  # The samples of one batch differ from each other.


def test_a_line_mode_model_writes_independent_names_that_stop_at_the_end_token(names):
    assert names.line_mode
    samples = names.generate([""] * 20, num_tokens=30, sampling=Sampling(temperature=0.8), seed=2)  # max_lines defaults to 1
    assert len(samples) == 20
    for sample in samples:
        assert sample.endswith("\n") and "\n" not in sample[:-1]
    assert sum(sample.rstrip("\n") in NAMES for sample in samples) >= 15  # the list is learned
    (completed,) = names.generate(["hann"], num_tokens=30, sampling=GREEDY)
    assert completed == "hannah\n"
    (two_lines,) = names.generate(["hann"], num_tokens=30, sampling=GREEDY, max_lines=2)
    assert two_lines.count("\n") == 2 and two_lines.startswith("hannah\n")


def test_padding_and_unk_are_never_generated():
    """A stand-in model that always finds <pad> and <unk> likeliest."""
    table = tf.constant([[0.3, 0.3, 0.02, 0.2, 0.12, 0.06]], tf.float32)
    model = lambda windows, training=False: tf.tile(table, [tf.shape(windows)[0], 1])  # noqa: E731
    generator = Generator(model, Vocabulary(["<pad>", "<unk>", "<eol>", "w0", "w1", "w2"]), Tokenizer(), window_size=2)
    ids = generator.generate_ids(tf.zeros((64, 2), tf.int32), 40, 1.0, 0, 1.0, 3, 0).numpy()
    assert set(np.unique(ids).tolist()) == {2, 3, 4, 5}


def test_greedy_ignores_the_temperature(song):
    assert song.generate(["bad blood\nyou know"], 3, sampling=Sampling.from_strategy("greedy", temperature=5.0)) == [
        "bad blood\nyou know it used to"
    ]


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_the_batch_parts_do_not_change_the_text(song, parts):
    generator = song
    prompts = ["cause", "you know", "", "baby now", "bad"]
    split = Generator(generator.model, generator.vocabulary, generator.tokenizer, generator.window_size, parts=parts)
    assert split.generate(prompts, 20, seed=5) == generator.generate(prompts, 20, seed=5)


def generate_cli(capsys, *argv):
    status = cli.main("generate", list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_prints_samples_and_warns_about_unknown_words(song_run, capsys):
    status, out, err = generate_cli(capsys, "--model", str(song_run), "--prompt", "cause baby now we got",
                                    "--words", "2", "--strategy", "greedy", "--num-samples", "2")
    assert status == 0
    assert out == "cause baby now we got bad blood\n\ncause baby now we got bad blood\n"
    status, out, err = generate_cli(capsys, "--model", str(song_run), "--prompt", "cause zebra", "--words", "3")
    assert status == 0 and "warning: not in the vocabulary, read as <unk>: zebra" in err


def test_cli_names_demo_prints_one_name_a_line(names_run, capsys):
    status, out, _ = generate_cli(capsys, "--model", str(names_run), "--num-samples", "10", "--max-lines", "1",
                                  "--words", "30", "--temperature", "0.7")
    assert status == 0
    assert len(out.splitlines()) == 10 and all(name.isalpha() for name in out.splitlines())


def test_cli_interactive_reads_prompts_until_end_of_input(song_run, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("cause baby now we got\nyou know it used to\n"))
    status, out, _ = generate_cli(capsys, "--model", str(song_run), "--interactive", "--words", "2", "--strategy", "greedy")
    assert status == 0
    assert out == "cause baby now we got bad blood\nyou know it used to be mad\n"


def test_cli_interactive_answers_a_thousand_prompts_and_refuses_one_that_is_not_utf8(song_run, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("cause baby\n" * 1000))
    status, out, _ = generate_cli(capsys, "--model", str(song_run), "--interactive", "--words", "1", "--strategy", "greedy")
    assert status == 0 and out.splitlines() == ["cause baby now"] * 1000
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("cause\nbaby \udcff\n"))
    status, out, err = generate_cli(capsys, "--model", str(song_run), "--interactive", "--words", "1", "--strategy", "greedy")
    assert status == 2 and out == "cause baby\n" and "error: prompt 2 is not valid UTF-8 (at character 6)" in err


def test_default_model_is_the_most_recent_run(tmp_path):
    for name in ("old", "new"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.keras").write_bytes(b"")
        os.utime(tmp_path / name / "model.keras", (1e9, 1e9 if name == "old" else 2e9))
    assert latest_run(tmp_path) == tmp_path / "new"
    with pytest.raises(RnnlmError, match="no trained run in"):
        latest_run(tmp_path / "new")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--temperature", "0"], "temperature must be above 0"),
        (["--temperature", "-1"], "temperature must be above 0"),
        (["--top-k", "0"], "top-k must be at least 1, got 0"),
        (["--strategy", "top_p", "--temperature", "nan"], "temperature must be above 0 and finite, got nan"),
        (["--top-p", "0"], r"top-p must be in \(0, 1\]"),
        (["--top-p", "1.5"], r"top-p must be in \(0, 1\]"),
        (["--words", "0"], "between 1 and 100,000, got 0"),
        (["--words", "-5"], "between 1 and 100,000, got -5"),
        (["--words", "1000000"], "between 1 and 100,000, got 1,000,000"),
        (["--num-samples", "0"], "--num-samples must be between 1 and 1,000, got 0"),
    ],
)
def test_bad_settings_are_one_line_errors(song_run, capsys, argv, message):
    status, out, err = generate_cli(capsys, "--model", str(song_run), *argv)
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and __import__("re").search(message, err), err


def test_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path, capsys):
    status, _, err = generate_cli(capsys, "--model", str(tmp_path))
    assert status == 2 and "is not a keras_rnnlm run" in err
    status, _, err = generate_cli(capsys, "--model", str(tmp_path / "missing"))
    assert status == 2 and "is not a keras_rnnlm run" in err


@pytest.mark.slow  # two more processes, each loading TensorFlow
def test_same_seed_same_text_across_processes(song_run, song):
    command = [sys.executable, "-m", "keras_rnnlm.generate", "--model", str(song_run), "--prompt", "you know",
               "--words", "25", "--temperature", "3", "--num-samples", "3", "--seed", "11"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    texts = song.generate(["you know"] * 3, 25, Sampling(temperature=3.0), seed=11)
    assert result.stdout == "\n\n".join(text.rstrip("\n") for text in texts) + "\n"
    assert song.generate(["you know"] * 3, 25, Sampling(temperature=3.0), seed=12) != texts


def test_a_bptt_model_carries_its_state_through_the_prompt_and_every_token_it_writes(bptt_run):
    """The word after "on the" alternates between mat and hat, decided 7 tokens back; the
    pattern's period (14) is longer than the model's bptt step (10) and than any window."""
    generator = Generator.from_run(bptt_run)
    assert generator.window_size is None
    after_mat, after_hat = generator.generate(
        ["the cat sat on the mat\nthe cat sat on the", "the cat sat on the hat\nthe cat sat on the"], 70, GREEDY
    )
    for text, first in ((after_mat, "hat"), (after_hat, "mat")):
        endings = [line.split()[-1] for line in text.splitlines()[1:] if len(line.split()) == 6]  # whole lines
        assert len(endings) >= 8
        assert endings == [first, {"mat": "hat", "hat": "mat"}[first]] * (len(endings) // 2) + [first] * (len(endings) % 2)
    (empty,) = generator.generate([""], 6, GREEDY)  # starts as the text started: after a line break
    assert empty == "the cat sat on the " + empty.split()[-1] and empty.split()[-1] in ("mat", "hat")
