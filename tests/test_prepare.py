"""python -m keras_rnnlm.prepare: the prepared ids are training-from-text's ids, a killed
prepare resumes to the same files, and damaged or mismatched shards are refused."""

import dataclasses
import json

import numpy as np
import pytest
from conftest import small_config

from keras_rnnlm import cli, corpus, prepare
from keras_rnnlm.corpus import corpus_documents
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.shards import PreparedCorpus
from keras_rnnlm.splits import corpus_segments


@pytest.fixture
def texts(tmp_path):
    """Three documents (one with blank lines and one without a final line break) and a
    separate validation file; enough text for several blocks of 2,000 bytes."""
    rng = np.random.default_rng(0)
    words = np.array("cause baby now we got bad blood you know it used to be mad love , don't".split())
    folder = tmp_path / "texts"
    folder.mkdir()
    for number, lines in enumerate((400, 3, 250)):
        text = "\n".join(" ".join(rng.choice(words, rng.integers(0, 9))) for _ in range(lines))
        (folder / f"{number}.txt").write_text(text + ("\n" if number != 2 else ""), encoding="utf-8")
    (tmp_path / "held_out.txt").write_text("you know it used to be\nbad love\n", encoding="utf-8")
    return folder, tmp_path / "held_out.txt"


def assert_same_as_in_memory(config, out):
    train, valid, vocabulary = corpus_segments(config, corpus_documents(config.corpus.paths, config.corpus.builtin))
    prepared = PreparedCorpus(out)
    assert prepared.vocabulary() == vocabulary
    for split, expected in (("train", train), ("valid", valid)):
        segments = prepared.segments(split)
        ids = np.concatenate([*segments.tokens.chunks(1000)]) if segments.num_tokens else np.zeros(0, np.int32)
        assert ids.tolist() == expected.tokens.tolist()
        assert np.asarray(segments.ends).tolist() == expected.ends.tolist()


@pytest.mark.parametrize(
    "settings",
    [
        {},  # word level, validation the end of each file
        {"corpus": {"level": "char"}},
        {"corpus": {"sequences": "lines"}, "train": {"seed": 7}},  # random held-out lines
        {"vocab": {"max_size": 12, "min_count": 2}},  # rare words become <unk>
        {"separate_valid": True},
        {"separate_valid": True, "corpus": {"sequences": "lines"}},
    ],
)
def test_prepared_ids_are_the_ids_training_from_text_uses(texts, tmp_path, monkeypatch, settings):
    monkeypatch.setattr(corpus, "BLOCK_BYTES", 2000)
    folder, held_out = texts
    settings = dict(settings)
    valid = [str(held_out)] if settings.pop("separate_valid", False) else []
    config = small_config([folder], **settings)
    config = dataclasses.replace(config, corpus=dataclasses.replace(config.corpus, valid_paths=tuple(valid)))
    manifest = prepare.prepare(config, tmp_path / "prepared", shard_tokens=500)  # several shards a split
    assert len(manifest["splits"]["train"]["shards"]) > 1
    assert_same_as_in_memory(config, tmp_path / "prepared")


def test_a_wide_vocabulary_is_stored_as_uint32(tmp_path):
    (tmp_path / "wide.txt").write_text(" ".join(f"w{number}" for number in range(70_000)) + "\n", encoding="utf-8")
    config = small_config([tmp_path / "wide.txt"], vocab={"max_size": 100_000})
    manifest = prepare.prepare(config, tmp_path / "prepared")
    assert manifest["dtype"] == "<u4" and manifest["vocabulary_size"] == 70_003
    assert_same_as_in_memory(config, tmp_path / "prepared")


class Killed(BaseException):
    """Stands for the process being killed: not an Exception, so nothing catches it."""


@pytest.mark.parametrize("kill_at", ["tokenizing", "writing"])
def test_a_killed_prepare_resumes_to_the_files_of_an_uninterrupted_one(texts, tmp_path, monkeypatch, kill_at):
    monkeypatch.setattr(corpus, "BLOCK_BYTES", 2000)
    monkeypatch.setattr(prepare, "CHECKPOINT_BYTES", 3000)  # a saved state every other block
    config = small_config([texts[0]])
    whole = prepare.prepare(config, tmp_path / "whole", shard_tokens=400)

    if kill_at == "tokenizing":  # in the middle of the first document, after a saved state
        original, blocks_read = prepare.encode_blocks, []

        def encode_blocks(*args, **kwargs):
            for block in original(*args, **kwargs):
                blocks_read.append(block)
                if len(blocks_read) == 4:
                    raise Killed
                yield block

        monkeypatch.setattr(prepare, "encode_blocks", encode_blocks)
    else:  # after the first training shard
        original_end_shard = prepare._ShardWriter._end_shard

        def end_shard(self):
            if self.shards:
                raise Killed
            original_end_shard(self)

        monkeypatch.setattr(prepare._ShardWriter, "_end_shard", end_shard)
    with pytest.raises(Killed):
        prepare.prepare(config, tmp_path / "resumed", shard_tokens=400)
    assert not (tmp_path / "resumed" / "manifest.json").exists()  # unfinished: no manifest
    monkeypatch.undo()
    monkeypatch.setattr(corpus, "BLOCK_BYTES", 2000)
    resumed = prepare.prepare(config, tmp_path / "resumed", shard_tokens=400)

    assert {key: value for key, value in resumed.items() if key != "seconds"} == {key: value for key, value in whole.items() if key != "seconds"}
    for name in whole["files"]:
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert not (tmp_path / "resumed" / "work").exists()


def test_prepare_and_train_from_the_command_line(corpora, tmp_path, capsys, monkeypatch):
    import keras_rnnlm.train


    out = tmp_path / "prepared"
    assert cli.main("prepare", ["--corpus", str(corpora / "song.txt"), "--out", str(out), "--set", "vocab.max_size=50"]) == 0
    assert f"train from it: python -m keras_rnnlm.train --data {out} --set vocab.max_size=50" in capsys.readouterr().err
    assert cli.main("prepare", ["--corpus", str(corpora / "song.txt"), "--out", str(out), "--set", "vocab.max_size=50"]) == 0
    assert "already prepared" in capsys.readouterr().err

    # Training from the shards reads what training from the text reads: the same history.
    common = ["--output-dir", str(tmp_path / "runs"), "--set", "vocab.max_size=50", "--set", "data.batch_size=16",
              "--set", "model.units=16", "--set", "model.embedding_dim=8", "--set", "train.sample_length=0",
              "--set", "train.tensorboard=false", "--set", "train.precision='float32'", "--epochs", "2"]
    assert cli.main("train", ["--data", str(out), "--run-name", "shards", *common]) == 0
    assert f"corpus: prepared corpus {out}: 680 tokens from 1 document(s)" in capsys.readouterr().err
    monkeypatch.setattr(keras_rnnlm.train, "PREPARE_HINT_BYTES", 2000)  # the song is 2,560 bytes
    assert cli.main("train", ["--corpus", str(corpora / "song.txt"), "--run-name", "text", *common]) == 0
    assert "python -m keras_rnnlm.prepare (the same --corpus" in capsys.readouterr().err
    shards, text = ((tmp_path / "runs" / name / "history.csv").read_text() for name in ("shards", "text"))
    assert shards == text and len(shards.splitlines()) == 3


def refusal(capsys, command, argv):
    assert cli.main(command, argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_a_truncated_or_altered_shard_is_named(corpora, tmp_path, capsys):
    out = tmp_path / "prepared"
    prepare.prepare(small_config([corpora / "song.txt"]), out, shard_tokens=100)
    shard = out / "train-00001.bin"
    original = shard.read_bytes()
    shard.write_bytes(original[:-2])
    message = refusal(capsys, "train", ["--data", str(out), "--output-dir", str(tmp_path / "runs")])
    assert f"{shard} has 198 bytes where the manifest says 200 (truncated" in message

    shard.write_bytes(bytes([original[0] ^ 1]) + original[1:])  # same size, one bit flipped
    PreparedCorpus(out).check_files(checksums=False)  # sizes alone cannot tell
    with pytest.raises(RnnlmError, match=f"{shard} is altered"):
        PreparedCorpus(out).check_files()
    (out / "manifest.json").write_text("{", encoding="utf-8")
    assert "manifest.json is damaged" in refusal(capsys, "train", ["--data", str(out)])


def test_settings_that_differ_from_the_prepared_ones_are_refused(corpora, tmp_path, capsys):
    out = tmp_path / "prepared"
    prepare.prepare(small_config([corpora / "song.txt"], vocab={"max_size": 50}), out)
    message = refusal(capsys, "train", ["--data", str(out), "--output-dir", str(tmp_path / "runs")])
    assert message == (f"error: vocab.max_size = 10000 differs from the 50 that {out} was prepared with; "
                       "pass --set vocab.max_size=50, or prepare the corpus again with these settings")
    message = refusal(capsys, "train", ["--data", str(out), "--set", "vocab.max_size=50", "--set", "corpus.level=char"])
    assert message.startswith('error: corpus.level = "char" differs from the "word"')
    assert "either --data" in refusal(capsys, "train", ["--data", str(out), "--corpus", str(corpora / "song.txt")])
    assert "is not a prepared corpus" in refusal(capsys, "train", ["--data", str(corpora)])


def test_a_prepared_corpus_shorter_than_a_window_is_refused_as_text_is(tmp_path, capsys):
    (tmp_path / "short.txt").write_text("bad\n", encoding="utf-8")
    out = tmp_path / "prepared"
    assert cli.main("prepare", ["--corpus", str(tmp_path / "short.txt"), "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main("train", ["--data", str(out), "--output-dir", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: the corpus has only 2 training tokens, fewer than window_size + 1 = 6; give more text or a smaller data.window_size"
    )
    assert not (tmp_path / "runs" / "psalms").exists()  # nothing written


def test_prepare_never_overwrites_a_folder_of_the_users(corpora, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me", encoding="utf-8")
    argv = ["--corpus", str(corpora / "song.txt"), "--out", str(folder), "--overwrite"]
    assert "holds notes.txt, which keras_rnnlm did not write; choose another --out" in refusal(capsys, "prepare", argv)
    assert (folder / "notes.txt").read_text(encoding="utf-8") == "keep me"

    out = tmp_path / "prepared"
    assert cli.main("prepare", ["--corpus", str(corpora / "song.txt"), "--out", str(out)]) == 0
    capsys.readouterr()
    argv = ["--corpus", str(corpora / "names.txt"), "--out", str(out)]
    assert "holds a corpus prepared from other text or settings" in refusal(capsys, "prepare", argv)
    assert cli.main("prepare", [*argv, "--overwrite"]) == 0
    assert json.loads((out / "manifest.json").read_text())["sources"][0]["name"].endswith("names.txt")


def test_the_builtin_corpus_prepares_without_a_corpus_argument(tmp_path):
    manifest = prepare.prepare(small_config([]), tmp_path / "kjv")
    assert manifest["sources"][0]["name"] == "KJV Psalms"
    assert manifest["corpus_tokens"] > 80_000
    assert_same_as_in_memory(small_config([]), tmp_path / "kjv")


def test_windows_and_lanes_read_from_shards_are_those_read_from_memory(corpora, tmp_path):
    from keras_rnnlm.data import lanes, windowed_stream

    config = small_config([corpora / "song.txt"])
    prepare.prepare(config, tmp_path / "prepared", shard_tokens=64)  # windows and steps across shard edges
    train, _, _ = corpus_segments(config, corpus_documents(config.corpus.paths, config.corpus.builtin))
    from_shards, in_memory = PreparedCorpus(tmp_path / "prepared").segments("train"), train
    examples = np.random.default_rng(0).permutation(in_memory.num_tokens)
    for shards, memory in zip(windowed_stream(from_shards, 5).examples(examples), windowed_stream(in_memory, 5).examples(examples), strict=True):
        assert np.array_equal(shards, memory)
    shard_lanes, memory_lanes = lanes(from_shards, 7, 9), lanes(in_memory, 7, 9)
    for step in range(memory_lanes.num_steps):
        assert all(np.array_equal(a, b) for a, b in zip(shard_lanes.step(step), memory_lanes.step(step), strict=True))


def test_a_prepare_killed_with_sigkill_resumes_to_the_same_files(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(1)
    words = np.array([f"w{number}" for number in range(3000)])
    (tmp_path / "big.txt").write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(60_000)) + "\n", encoding="utf-8")
    run = ("import sys; from keras_rnnlm import cli, corpus, prepare; corpus.BLOCK_BYTES = 20_000; "
           "prepare.CHECKPOINT_BYTES = 100_000; sys.exit(cli.main('prepare', sys.argv[1:]))")

    def prepare_into(out):
        return [sys.executable, "-c", run, "--corpus", str(tmp_path / "big.txt"), "--out", str(out), "--shard-tokens", "100000"]

    subprocess.run(prepare_into(tmp_path / "whole"), check=True, capture_output=True)
    process = subprocess.Popen(prepare_into(tmp_path / "killed"), stderr=subprocess.DEVNULL)
    state = tmp_path / "killed" / "work" / "state.json"
    while not state.exists() and process.poll() is None:
        time.sleep(0.01)
    time.sleep(0.05)  # past the first saved state, well inside the first pass (4 MB at about 10 MB/s)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL and not (tmp_path / "killed" / "manifest.json").exists()
    result = subprocess.run(prepare_into(tmp_path / "killed"), check=True, capture_output=True, text=True)
    assert "resuming the prepare at document 1 of 1, byte" in result.stderr  # from the saved state, not afresh
    whole = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    for name in whole["files"]:
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
