import pytest

from keras_rnnlm.corpus import builtin_documents, find_documents
from keras_rnnlm.errors import RnnlmError


def test_a_file_several_files_and_a_folder(tmp_path):
    (tmp_path / "songs").mkdir()
    (tmp_path / "songs" / "b.txt").write_text("b\n")
    (tmp_path / "songs" / "a.txt").write_text("a\n")
    (tmp_path / "songs" / "notes.md").write_text("not text\n")
    (tmp_path / "one.txt").write_text("one\ntwo")
    documents = find_documents([tmp_path / "one.txt", tmp_path / "songs"])
    assert [d.path.name for d in documents] == ["one.txt", "a.txt", "b.txt"]
    assert list(documents[0].lines()) == ["one", "two"]


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(RnnlmError, match=r"corpus path .*missing\.txt does not exist"):
        find_documents([tmp_path / "missing.txt"])


def test_empty_file_and_empty_folder(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(RnnlmError, match="is empty"):
        find_documents([tmp_path / "empty.txt"])
    (tmp_path / "folder").mkdir()
    with pytest.raises(RnnlmError, match="has no .txt files"):
        find_documents([tmp_path / "folder"])


def test_non_utf8_names_the_file_and_byte_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\ncaf\xe9\n".encode("latin-1"))
    (document,) = find_documents([path])
    with pytest.raises(RnnlmError, match=r"latin1\.txt is not valid UTF-8 \(byte offset 14\)"):
        list(document.lines())


def test_binary_file_is_refused(tmp_path):
    path = tmp_path / "model.txt"
    path.write_bytes(b"text\n\x89PNG\x00\x00\x01")
    (document,) = find_documents([path])
    with pytest.raises(RnnlmError, match=r"looks binary \(a NUL byte at byte offset 9\)"):
        list(document.lines())


def test_builtin_poetry_is_four_books_one_verse_a_line():
    documents = builtin_documents("kjv-poetry")
    assert [d.name for d in documents] == ["KJV Psalms", "KJV Proverbs", "KJV Ecclesiastes", "KJV Song of Solomon"]
    psalms = list(documents[0].lines())
    assert psalms[0].startswith("Blessed is the man that walketh not in the counsel of the ungodly")
    assert psalms[6] == ""  # Psalm 1 has six verses, then a blank line before Psalm 2.
    assert not any("[" in line or "]" in line for line in psalms)
    assert len(builtin_documents("kjv")) == 66
