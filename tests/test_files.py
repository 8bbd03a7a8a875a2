"""Files are written whole, and a command touches only the folders and files it wrote."""

import json

import pytest

from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.files import MARKER, Owned, write_atomically, written_atomically


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "notes.txt"
    write_atomically(path, "old")
    with pytest.raises(ZeroDivisionError), written_atomically(path) as temporary:
        temporary.write_text("half")
        1 / 0
    assert path.read_text() == "old" and [entry.name for entry in tmp_path.iterdir()] == ["notes.txt"]


def run_folder(path, *extra):
    Owned(path, "run").claim()
    for name in ("config.toml", "model.keras", "logs/train/events.out.tfevents.1.host", "backup/latest.npz", *extra):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("x")
    return path


def test_a_folder_holding_only_its_kinds_files_passes_and_anything_else_is_named(tmp_path):
    Owned(tmp_path / "absent", "run").check("choose another")
    (tmp_path / "empty").mkdir()
    Owned(tmp_path / "empty", "run").check("choose another")
    ours = run_folder(tmp_path / "ours")
    Owned(ours, "run").check("choose another")
    (ours / "sub").mkdir()
    (ours / "sub" / "notes.txt").write_text("mine")
    with pytest.raises(RnnlmError, match=r"ours holds sub/notes.txt, which keras_rnnlm did not write; choose another, or move"):
        Owned(ours, "run").check("choose another")
    (tmp_path / "file").write_text("mine")
    with pytest.raises(RnnlmError, match="file is a file, not a folder; choose another"):
        Owned(tmp_path / "file", "run").check("choose another")
    with pytest.raises(RnnlmError, match="holds a keras_rnnlm run, not a export"):
        Owned(tmp_path / "ours", "export").check("choose another")


def test_a_folder_without_a_marker_is_the_users_unless_an_earlier_version_wrote_it(tmp_path):
    users = tmp_path / "users"
    (users / "work").mkdir(parents=True)
    (users / "vocabulary.txt").write_text("my words")  # a name prepare writes, but no manifest
    with pytest.raises(RnnlmError, match="holds vocabulary.txt"):
        Owned(users, "prepared corpus").check("choose another --out")
    earlier = tmp_path / "earlier"  # a run folder of keras_rnnlm 0.1.0: no marker
    earlier.mkdir()
    (earlier / "config.toml").write_text('name = "earlier"\n\n[corpus]\nlevel = "word"\n')
    (earlier / "vocabulary.txt").write_text("<pad>\n<unk>\n<eol>\nbaby\n")
    for name in ("model.keras", "history.csv", ".model.partial.keras"):
        (earlier / name).write_text("x")
    Owned(earlier, "run").check("choose another")
    (earlier / "thesis.docx").write_text("mine")
    with pytest.raises(RnnlmError, match="holds thesis.docx"):
        Owned(earlier, "run").check("choose another")
    own = tmp_path / "own"  # a user's config and word list, named as a run's files, are the user's
    own.mkdir()
    (own / "config.toml").write_text("[model]\nunits = 64\n")
    (own / "vocabulary.txt").write_text("baby\nlove\n")
    with pytest.raises(RnnlmError, match="holds config.toml, which keras_rnnlm did not write"):
        Owned(own, "run").check("choose another")


def test_folders_of_their_own_inside_are_judged_by_their_own_marker(tmp_path):
    search = tmp_path / "search"
    Owned(search, "search").claim()
    (search / "tune.json").write_text("{}")
    run_folder(search / "trials" / "0")
    Owned(search / "trials" / "0" / "saved_model", "export").claim()
    (search / "trials" / "0" / "saved_model" / "saved_model.pb").write_text("x")
    Owned(search, "search").check("choose another")
    (search / "trials" / "0" / "saved_model" / "mydata.csv").write_text("mine")
    with pytest.raises(RnnlmError, match="holds trials/0/saved_model/mydata.csv"):
        Owned(search, "search").check("choose another")


def test_clearing_removes_the_tools_files_only(tmp_path):
    folder = run_folder(tmp_path / "run", "summary.json")
    (folder / "mine.txt").write_text("mine")  # refused by check; clear would still leave it
    Owned(folder, "run").clear()
    assert [path.relative_to(folder).as_posix() for path in folder.rglob("*")] == ["mine.txt"]


def test_the_marker_names_the_tool_the_kind_and_the_files(tmp_path):
    Owned(tmp_path / "corpus", "prepared corpus").claim("extra.bin")
    marker = json.loads((tmp_path / "corpus" / MARKER).read_text())
    assert marker["tool"] == "keras_rnnlm" and marker["kind"] == "prepared corpus"
    assert "manifest.json" in marker["files"] and marker["files"][-1] == "extra.bin"


def test_the_locks_of_a_searchs_trial_runs_are_its_own(tmp_path):
    search = tmp_path / "search"
    Owned(search, "search").claim()
    run_folder(search / "trials" / "1")
    (search / "trials" / ".1.keras_rnnlm-lock").write_text("")  # RunFolder.lock, beside the trial's folder
    Owned(search, "search").check("choose another --run-name")
    (search / "trials" / ".1.lock").write_text("")  # not our name
    with pytest.raises(RnnlmError, match=r"holds trials/.1.lock"):
        Owned(search, "search").check("choose another --run-name")
    (search / "trials" / ".1.lock").unlink()
    Owned(search, "search").clear()
    assert list(search.iterdir()) == []
