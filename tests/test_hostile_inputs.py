"""Hostile and careless input: exactly one line on stderr, nothing on stdout, status 2,
and every file that was there before still there, byte for byte. Each case was once a
deleted file or a traceback."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import SONG, run_as_main

from keras_rnnlm import cli

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--config", str(ROOT / "configs" / "tiny.toml")]
DEEP_TOML = "a = " + "[" * 5000 + "]" * 5000 + "\n"  # 10 KB of nesting


def snapshot(folder: Path) -> dict:
    """Every entry below ``folder``: a regular file's bytes, or what else it is."""
    return {path.relative_to(folder).as_posix(): contents(path) if path.is_file() else "folder" if path.is_dir() else "other"
            for path in sorted(folder.rglob("*")) if not path.is_symlink()}


def contents(path: Path) -> bytes:
    """A file's bytes through the os module, which the simulated permission errors leave alone."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        return b"".join(iter(lambda: os.read(descriptor, 1 << 20), b""))
    finally:
        os.close(descriptor)


def refused(capfd, command, argv, folder):
    """Runs the command in this process; asserts the one line, the status and the folder unchanged."""
    capfd.readouterr()  # what the set-up printed
    before = snapshot(folder)
    status = cli.main(command, [str(part) for part in argv])
    out, err = capfd.readouterr()
    assert (status, out) == (2, ""), (status, out, err)
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert snapshot(folder) == before
    return err


@pytest.fixture
def song(tmp_path):
    (tmp_path / "song.txt").write_text(SONG * 40, encoding="utf-8")
    return tmp_path / "song.txt"


def foreign_files(folder: Path, *names: str) -> Path:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"the user's {name}")
    return folder


def test_training_over_a_folder_of_the_users_with_overwrite_is_refused(capfd, tmp_path, song):
    foreign_files(tmp_path / "runs" / "foreign", "thesis.docx", "sub/notes.txt")
    err = refused(capfd, "train", [*TINY, "--corpus", song, "--output-dir", tmp_path / "runs", "--run-name", "foreign",
                                   "--overwrite"], tmp_path)
    assert "holds sub/notes.txt, which keras_rnnlm did not write; choose another --run-name" in err


@pytest.mark.parametrize("name, message", [
    ("/some/absolute/folder", "--run-name '/some/absolute/folder' cannot name a folder: it holds a /"),
    ("..", "cannot name a folder: it starts with a ."),
    ("a\nb", "cannot name a folder: it holds a line break"),
])
def test_a_search_name_is_one_folder_name(capfd, tmp_path, song, name, message):
    (tmp_path / "search.toml").write_text("model.units = [16, 32]\n")
    err = refused(capfd, "tune", [*TINY, "--corpus", song, "--search", tmp_path / "search.toml", "--run-name", name,
                                  "--output-dir", tmp_path / "runs", "--overwrite"], tmp_path)
    assert message in err


def test_tuning_over_a_folder_of_the_users_with_overwrite_is_refused(capfd, tmp_path, song):
    foreign_files(tmp_path / "runs" / "mine", "taxes.pdf", "photos/cat.jpg")
    (tmp_path / "search.toml").write_text("model.units = [16, 32]\n")
    err = refused(capfd, "tune", [*TINY, "--corpus", song, "--search", tmp_path / "search.toml", "--run-name", "mine",
                                  "--output-dir", tmp_path / "runs", "--overwrite"], tmp_path)
    assert "holds photos, which keras_rnnlm did not write" in err or "holds photos/cat.jpg" in err


def test_exporting_over_a_folder_holding_the_users_files_is_refused(capfd, tmp_path, song_run):
    out = foreign_files(tmp_path / "out", "saved_model.pb", "mydata.csv", "variables/notes.txt")
    err = refused(capfd, "export", ["--model", song_run, "--out", out], tmp_path)
    assert "holds mydata.csv, which keras_rnnlm did not write; choose another --out" in err


def test_preparing_into_a_folder_of_the_users_is_refused(capfd, tmp_path, song):
    out = foreign_files(tmp_path / "out", "work/chapter1.md", "vocabulary.txt")
    err = refused(capfd, "prepare", ["--corpus", song, "--out", out], tmp_path)
    assert "holds vocabulary.txt, which keras_rnnlm did not write" in err
    refused(capfd, "prepare", ["--corpus", song, "--out", out, "--overwrite"], tmp_path)


def test_launch_starts_at_most_one_worker_a_core_unless_told(capfd, tmp_path, song):
    err = refused(capfd, "launch", ["--workers", "1000", "--", "--corpus", song], tmp_path)
    assert f"--workers 1000 is more than this machine's {os.cpu_count()} cores" in err and "--oversubscribe" in err


def interrupted_run(tmp_path, song):
    """A run killed after its first epoch: model, history and backup."""
    import keras

    from conftest import small_config
    from keras_rnnlm.train import train

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    config = small_config([song], train={"epochs": 3})
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "runs" / "test", extra_callbacks=[Stop()], verbose=0)
    return config, tmp_path / "runs" / "test"


def test_a_run_that_cannot_resume_exactly_is_refused_not_trained_again(capfd, tmp_path, song):
    config, run = interrupted_run(tmp_path, song)
    (run / "history.csv").write_text("garbage,\x00\x01\nnot numbers\n")
    shutil.rmtree(run / "backup")
    (tmp_path / "test.toml").write_text((run / "config.toml").read_text())
    err = refused(capfd, "train", ["--config", tmp_path / "test.toml", "--output-dir", tmp_path / "runs"], tmp_path)
    assert "history.csv is damaged" in err
    (run / "history.csv").write_text("epoch,loss\n0,1.5\n")
    err = refused(capfd, "train", ["--config", tmp_path / "test.toml", "--output-dir", tmp_path / "runs"], tmp_path)
    assert "holds an unfinished run with no backup to resume from" in err and "--overwrite" in err


MANIFEST_EDITS = {
    "files removed": lambda manifest: manifest.pop("files"),
    "settings removed": lambda manifest: manifest.pop("settings"),
    "valid_sources removed": lambda manifest: manifest.pop("valid_sources"),
    "a list for an object": lambda manifest: manifest.update(splits=[]),
    "an int for a file entry": lambda manifest: manifest["files"].update({"vocabulary.txt": 7}),
    "bytes as a string": lambda manifest: manifest["files"]["vocabulary.txt"].update(bytes="147"),
    "dtype <f8": lambda manifest: manifest.update(dtype="<f8"),
    "shard_tokens 0": lambda manifest: manifest.update(shard_tokens=0),
    "a file outside the folder": lambda manifest: manifest["files"].update({"../../etc/passwd": {"bytes": 1, "crc32": 1}}),
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, corpora):
    folder = tmp_path_factory.mktemp("prepared")
    assert cli.main("prepare", ["--corpus", str(corpora / "song.txt"), "--out", str(folder / "song")]) == 0
    return folder / "song"


@pytest.mark.parametrize("edit", MANIFEST_EDITS.values(), ids=MANIFEST_EDITS.keys())
def test_an_edited_manifest_is_named_in_one_line(capfd, tmp_path, prepared, edit):
    copy = tmp_path / "prepared"
    shutil.copytree(prepared, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    err = refused(capfd, "train", [*TINY, "--data", copy, "--output-dir", tmp_path / "runs"], tmp_path)
    assert "manifest.json is damaged" in err and "prepare the corpus again with --overwrite" in err


def test_toml_nested_too_deeply_is_named_wherever_it_comes_from(capfd, tmp_path, song, song_run):
    (tmp_path / "deep.toml").write_text(DEEP_TOML)
    assert "nests arrays or tables too deeply" in refused(capfd, "train", ["--config", tmp_path / "deep.toml"], tmp_path)
    assert "nests arrays or tables too deeply" in refused(
        capfd, "train", ["--set", "train.epochs=" + DEEP_TOML[4:].strip(), "--corpus", song], tmp_path)
    assert "nests arrays or tables too deeply" in refused(
        capfd, "tune", [*TINY, "--corpus", song, "--search", tmp_path / "deep.toml", "--output-dir", tmp_path / "runs"], tmp_path)
    run = tmp_path / "run"
    shutil.copytree(song_run, run)
    (run / "config.toml").write_text(DEEP_TOML)
    assert "nests arrays or tables too deeply" in refused(capfd, "generate", ["--model", run], tmp_path)


@pytest.mark.parametrize("below, message", [
    ("", "is a file, not a folder"),
    ("runs", "is under .*file, which is a file"),
])
def test_an_output_folder_that_cannot_be_one_is_refused_before_tensorflow(capfd, tmp_path, song, below, message):
    import re

    (tmp_path / "file").write_text("x")
    err = refused(capfd, "train", [*TINY, "--corpus", song, "--output-dir", tmp_path / "file" / below], tmp_path)
    assert re.search(message, err), err


def test_a_folder_the_system_will_not_create_is_one_line(capfd, tmp_path, song):
    """/proc takes no new folders, whatever its permissions say (root may write anywhere else)."""
    refused(capfd, "train", [*TINY, "--corpus", song, "--output-dir", "/proc/keras_rnnlm_runs"], tmp_path)


def test_prepare_out_under_a_file_is_refused(capfd, tmp_path, song):
    (tmp_path / "file").write_text("x")
    assert "is under" in refused(capfd, "prepare", ["--corpus", song, "--out", tmp_path / "file" / "out"], tmp_path)


@pytest.mark.parametrize("argv", [["--run-name", "a\0b"], ["--corpus", "song\0.txt"], ["--output-dir", "runs\0"]])
def test_a_nul_in_any_argument_is_one_line(capfd, tmp_path, song, argv):
    assert "NUL character" in refused(capfd, "train", [*TINY, *(["--corpus", song] if "--corpus" not in argv else []), *argv],
                                      tmp_path)


def test_a_config_whose_window_no_longer_matches_the_model_is_refused(capfd, tmp_path, song_run, song):
    run = tmp_path / "run"
    shutil.copytree(song_run, run)
    config = (run / "config.toml").read_text().replace("window_size = 5", "window_size = 7")
    (run / "config.toml").write_text(config)
    for command, argv in (("generate", ["--model", run]), ("evaluate", ["--model", run, "--text", song])):
        err = refused(capfd, command, argv, tmp_path)
        assert "says data.window_size = 7 but" in err and "reads windows of 5 tokens" in err


@pytest.mark.parametrize("make, says", [
    (lambda d: os.mkfifo(d / "fifo.txt") or d / "fifo.txt", "is a FIFO (a named pipe), not a file"),
    (lambda d: Path("/dev/null"), "is a device, not a file"),
    (lambda d: (d / "folder.toml").mkdir() or d / "folder.toml", "is a folder, not a file"),
])
def test_a_fifo_a_device_or_a_folder_where_a_file_goes_says_what_it_is(capfd, tmp_path, song, make, says):
    path = make(tmp_path)
    assert says in refused(capfd, "train", ["--config", path], tmp_path)
    if path.name != "folder.toml":
        assert says in refused(capfd, "train", ["--corpus", path], tmp_path)


@pytest.mark.parametrize("damage, argv, message", [
    ("model", ["keras_rnnlm.generate", "--model", "{run}"], "model.keras is damaged: it is not a whole .keras archive"),
    ("short", ["keras_rnnlm.train", "--corpus", "{short}"], "fewer than window_size + 1 = 6"),
    ("short", ["keras_rnnlm.train", "--corpus", "{short}", "--set", "data.mode=bptt"], "fewer than data.batch_size x data.bptt_steps"),
])
def test_what_needs_no_tensorflow_is_told_before_it_loads(tmp_path, song_run, damage, argv, message):
    run = tmp_path / "run"
    shutil.copytree(song_run, run)
    (run / "model.keras").write_bytes((run / "model.keras").read_bytes()[:3000])
    (tmp_path / "short.txt").write_text("too short\n")
    argv = [part.format(run=run, short=tmp_path / "short.txt") for part in argv]
    status, tensorflow_loaded, out, err = run_as_main(tmp_path, *argv)
    assert (status, out, tensorflow_loaded) == (2, "", False) and len(err.splitlines()) == 1 and message in err, err


def test_files_this_user_may_not_read_are_named_in_one_line(capfd, tmp_path, song, song_run, monkeypatch):
    """A config, a search file, a run's config.toml and a corpus folder this user may not
    read (simulated: root here may read everything)."""
    import builtins
    import io

    (tmp_path / "config.toml").write_text("[model]\nunits = 16\n")
    (tmp_path / "search.toml").write_text("model.units = [16]\n")
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text(SONG)
    run = tmp_path / "run"
    shutil.copytree(song_run, run)
    unreadable = {tmp_path / "config.toml", tmp_path / "search.toml", run / "config.toml", tmp_path / "corpus"}
    real_open, real_scandir = builtins.open, os.scandir

    def denied(path):
        if not isinstance(path, int) and Path(os.fspath(path)) in unreadable:
            raise PermissionError(13, "Permission denied", os.fspath(path))

    def guarded_open(path, *args, **kwargs):
        return denied(path) or real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)  # what Path.open and Path.read_text call
    monkeypatch.setattr(os, "scandir", lambda path=".": denied(path) or real_scandir(path))
    for command, argv, message in [
        ("train", ["--config", tmp_path / "config.toml", "--output-dir", tmp_path / "runs"], "cannot read config file"),
        ("tune", ["--search", tmp_path / "search.toml", "--corpus", song, "--output-dir", tmp_path / "runs"], "cannot read search file"),
        ("generate", ["--model", run], "cannot read the run's config"),
        ("train", ["--corpus", tmp_path / "corpus", "--output-dir", tmp_path / "runs"], "cannot read"),
    ]:
        assert message in refused(capfd, command, argv, tmp_path)


def test_a_prompt_is_printed_back_without_control_characters_and_a_long_one_by_its_end(capfd, song_run, monkeypatch):
    import io

    printed = []
    for prompt in ("cause baby\x00now we\x1b[2J got", "bad " * 250_000 + "blood"):  # the second: a megabyte
        monkeypatch.setattr(sys, "stdin", io.StringIO(prompt + "\n"))
        assert cli.main("generate", ["--model", str(song_run), "--interactive", "--words", "3", "--strategy", "greedy"]) == 0
        printed.append(capfd.readouterr().out)
    first, second = printed
    assert "\x00" not in first and "\x1b" not in first and "\\x00" in first and "\\x1b" in first
    assert len(second) < 1_100 and second.startswith("…") and "bad bad blood" in second


@pytest.mark.parametrize("command, argv", [
    ("train", ["--corpus", "lyrics\nfinal.txt"]),
    ("train", ["--config", "my\x1b[2Jconfig.toml"]),
    ("evaluate", ["--model", "runs\nold", "--text", "song.txt"]),
])
def test_a_path_with_a_line_break_or_an_escape_is_named_in_one_printable_line(capfd, tmp_path, command, argv):
    err = refused(capfd, command, argv, tmp_path)
    assert "\\x0a" in err or "\\x1b" in err


def test_a_huge_evaluation_batch_is_refused(capfd, tmp_path, song_run, song):
    err = refused(capfd, "evaluate", ["--model", song_run, "--text", song, "--batch-size", "99999999999999999999"], tmp_path)
    assert "--batch-size must be between 1 and 1,000,000" in err
