"""Odd input gives text or a one-line error: never a traceback, a hang or a memory blow-up.

Hypothesis draws the inputs from a fixed seed (derandomize), with a small budget."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_rnnlm.config import load_config
from keras_rnnlm.corpus import Document
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.generate import Generator
from keras_rnnlm.sampling import Sampling
from keras_rnnlm.tokenizer import Tokenizer

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Text of every kind: controls, NUL, right-to-left scripts, combining marks, lone surrogates.
ODD_TEXT = st.text(st.characters(codec=None, categories=None), max_size=200) | st.sampled_from(
    ["", " ", "\t\n\n", "\0", "\u202egnol\u202c", "שלום עולם", "e\u0301\u0301", "\udcff", "a" * 1_000_000]
)
ODD_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, float("nan"), float("inf"), 10**12]),
)


@pytest.fixture(scope="module")
def song(song_run):
    return Generator.from_run(song_run)


@FUZZ
@given(prompt=ODD_TEXT)
def test_any_prompt_gives_text(song, prompt):
    (text,) = song.generate([prompt], 3, Sampling(temperature=0.0))
    assert isinstance(text, str)


@FUZZ
@given(temperature=ODD_NUMBERS, top_k=ODD_NUMBERS, top_p=ODD_NUMBERS, words=ODD_NUMBERS, seed=ODD_NUMBERS, max_lines=ODD_NUMBERS)
def test_any_numeric_setting_gives_text_or_a_one_line_error(song, temperature, top_k, top_p, words, seed, max_lines):
    try:
        if not all(isinstance(value, int) for value in (top_k, words, seed, max_lines)):
            raise RnnlmError("not an integer")  # the command line's own parser refuses those
        sampling = Sampling(temperature=float(temperature), top_k=top_k, top_p=float(top_p))
        song.generate(["cause baby"], min(words, 50) if words > 0 else words, sampling, seed=seed, max_lines=max_lines)
    except RnnlmError as error:
        assert "\n" not in str(error)


@FUZZ
@given(value=ODD_NUMBERS, key=st.sampled_from([
    "data.window_size", "data.bptt_steps", "data.batch_size", "model.units", "model.embedding_dim", "model.layers",
    "model.dropout", "train.epochs", "train.learning_rate", "train.clipnorm", "train.seed", "train.sample_length",
    "train.sample_temperature", "vocab.max_size", "corpus.valid_fraction", "train.backup_every_steps",
]))
def test_any_numeric_config_value_is_accepted_within_bounds_or_refused_in_one_line(key, value):
    try:
        load_config(None, [f"{key}={value!r}"])  # TOML reads nan, inf and -inf as Python writes them
    except RnnlmError as error:
        assert key in str(error) and "\n" not in str(error)


@FUZZ
@given(data=st.binary(max_size=3000))
def test_any_file_content_reads_as_text_or_is_refused_in_one_line(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "corpus.txt"
    path.write_bytes(data)
    try:
        for block in Document(str(path), path=path).blocks():
            Tokenizer().tokens_from_text(block)
    except RnnlmError as error:
        assert str(path) in str(error) and "\n" not in str(error)
