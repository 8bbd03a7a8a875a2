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


# Names a user's files may have, many of them names keras_rnnlm writes too.
USERS_NAMES = ["thesis.docx", "model.keras", "vocabulary.txt", "config.toml", "history.csv", "manifest.json",
               "saved_model.pb", "work/chapter1.md", "logs/notes.txt", "variables/notes.txt", "backup/latest.npz",
               "trials/0/notes.txt", ".hidden", "sub/deeper/file.bin", "train-00000.bin"]
COMMANDS = {"train": "song_run", "prepare": "prepared", "export": "exported"}  # command: a folder of the tool's it may replace
KINDS = {"train": "run", "prepare": "prepared corpus", "export": "export"}


@pytest.fixture(scope="module")
def own_folders(song_run, corpora, tmp_path_factory):
    """A folder of each kind, written by keras_rnnlm: what a command may replace."""
    from keras_rnnlm import cli

    folder = tmp_path_factory.mktemp("own")
    assert cli.main("prepare", ["--corpus", str(corpora / "song.txt"), "--out", str(folder / "prepared")]) == 0
    assert cli.main("export", ["--model", str(song_run), "--out", str(folder / "exported")]) == 0
    return {"song_run": song_run, "prepared": folder / "prepared", "exported": folder / "exported"}


@pytest.mark.slow  # 14 commands on folders of every kind: half a minute
@settings(max_examples=14, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    command=st.sampled_from(sorted(COMMANDS)),
    contents=st.sampled_from(["absent", "empty", "the user's", "the tool's", "both", "a file"]),
    users=st.lists(st.tuples(st.sampled_from(USERS_NAMES), st.binary(max_size=16)), min_size=1, max_size=3),
    beside=st.booleans(),  # a file of the user's beside the folder too
    overwrite=st.booleans(),
)
def test_no_command_changes_a_file_it_did_not_write(tmp_path_factory, corpora, song_run, own_folders, command, contents,
                                                    users, beside, overwrite):
    import fnmatch
    import shutil

    from keras_rnnlm import cli
    from keras_rnnlm.files import LAYOUTS

    root = tmp_path_factory.mktemp("fuzz")
    target = root / "runs" / "test"
    (root / "runs").mkdir()
    if contents in ("the tool's", "both"):
        shutil.copytree(own_folders[COMMANDS[command]], target)
    elif contents == "empty":
        target.mkdir()
    elif contents == "a file":
        target.write_bytes(b"the user's file")
    users_files = {}
    if contents in ("the user's", "both"):
        for name, data in users:
            path = target / name
            # Beside the tool's files, a user's file under a name the folder's marker gives
            # as the tool's (backup/latest.npz in a run folder) is the tool's to replace.
            ours = contents == "both" and any(fnmatch.fnmatchcase(name, pattern) for pattern in LAYOUTS[KINDS[command]])
            if ours or path.exists() or path.parent.is_file():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            users_files[path] = data
    if contents == "a file":
        users_files[target] = b"the user's file"
    if beside:
        (root / "runs" / ".test.lock").write_bytes(b"mine")
        users_files[root / "runs" / ".test.lock"] = b"mine"
    tiny = ["--set", "train.epochs=1", "--set", "train.sample_length=0", "--set", "train.tensorboard=false",
            "--set", "model.units=8", "--set", "model.embedding_dim=8", "--set", 'train.precision="float32"']
    argv = {
        "train": ["--corpus", str(corpora / "song.txt"), "--output-dir", str(root / "runs"), "--run-name", "test", *tiny],
        "prepare": ["--corpus", str(corpora / "song.txt"), "--out", str(target)],
        "export": ["--model", str(song_run), "--out", str(target)],
    }[command] + (["--overwrite"] if overwrite and command != "export" else [])
    status = cli.main(command, argv)
    assert status in (0, 2)
    for path, data in users_files.items():
        assert path.is_file() and path.read_bytes() == data, f"{command} {argv}: {path} changed"
    if status == 0 and contents in ("the user's", "both") and users_files.keys() - {root / "runs" / ".test.lock"}:
        raise AssertionError(f"{command} wrote into a folder holding the user's files")
