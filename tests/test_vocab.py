import multiprocessing
import os
import subprocess
import sys

import numpy as np

from keras_rnnlm.corpus import Document
from keras_rnnlm.tokenizer import LINE_BREAK, Tokenizer
from keras_rnnlm.vocab import LINE_BREAK_ID, UNK_ID, Vocabulary, build_vocabulary, encode_documents


def test_most_frequent_first_after_reserved_tokens_ties_in_first_seen_order():
    vocabulary, (ids,) = build_vocabulary([Document("d", text="b a b c a b d")], Tokenizer(), max_size=100)
    assert vocabulary.tokens == ["<pad>", "<unk>", "<eol>", "b", "a", "c", "d"]
    assert vocabulary.tokens_from_ids(ids) == "b a b c a b d".split() + ["<eol>"]


def test_max_size_and_min_count_send_rare_tokens_to_unk():
    text = "a a a b b c"
    vocabulary, (ids,) = build_vocabulary([Document("d", text=text)], Tokenizer(), max_size=4)
    assert vocabulary.tokens == ["<pad>", "<unk>", "<eol>", "a"]
    assert list(ids) == [3, 3, 3, UNK_ID, UNK_ID, UNK_ID, LINE_BREAK_ID]
    vocabulary, _ = build_vocabulary([Document("d", text=text)], Tokenizer(), max_size=100, min_count=2)
    assert vocabulary.tokens[3:] == ["a", "b"]


def test_literal_unk_keeps_the_unk_id():
    vocabulary, (ids,) = build_vocabulary([Document("d", text="the <unk> of <unk>")], Tokenizer(), max_size=100)
    assert "<unk>" not in vocabulary.tokens[3:]
    assert list(ids) == [3, UNK_ID, 4, UNK_ID, LINE_BREAK_ID]


def test_saved_vocabulary_keeps_every_id(tmp_path):
    vocabulary, _ = build_vocabulary([Document("d", text="don't , stop\nnaïve 42 ,")], Tokenizer(), max_size=100)
    vocabulary.save(tmp_path / "vocabulary.txt")
    loaded = Vocabulary.load(tmp_path / "vocabulary.txt")
    assert loaded == vocabulary
    assert [loaded.id_from_token(t) for t in vocabulary.tokens] == list(range(len(vocabulary)))
    assert not list(tmp_path.glob("*.tmp"))


def test_fixed_vocabulary_encodes_unknown_words_as_unk():
    vocabulary = Vocabulary(["<pad>", "<unk>", "<eol>", "baby", "now"])
    (ids,) = encode_documents([Document("d", text="baby now never")], Tokenizer(), vocabulary)
    assert ids.dtype == np.int32
    assert list(ids) == [3, 4, UNK_ID, LINE_BREAK_ID]


def test_a_large_corpus_encodes_the_same_in_worker_processes(tmp_path, monkeypatch):
    import keras_rnnlm.vocab as vocab

    rng = np.random.default_rng(0)
    words = np.array([f"w{number}" for number in range(5000)] + [",", "don't", "Naïve"])
    lines = [" ".join(rng.choice(words, 12)) for _ in range(40_000)]  # about 3 MB: three blocks
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("\n".join(lines), encoding="utf-8")
    second.write_text("tail words never seen w1\n", encoding="utf-8")
    documents = [Document("a", path=first), Document("b", path=second)]

    serial = build_vocabulary(documents, Tokenizer(), max_size=3000)
    monkeypatch.setattr(vocab, "PARALLEL_BYTES", 0)
    parallel = build_vocabulary(documents, Tokenizer(), max_size=3000)
    assert parallel[0] == serial[0]
    assert all(np.array_equal(a, b) for a, b in zip(parallel[1], serial[1], strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(encode_documents(documents, Tokenizer(), serial[0]), serial[1], strict=True))


def _text_of_three_blocks(path):
    """A file of about 3 MB (three encoding blocks) of random words, with its serial encoding."""
    rng = np.random.default_rng(1)
    words = np.array([f"w{number}" for number in range(3000)])
    path.write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(40_000)), encoding="utf-8")
    return build_vocabulary([Document("a", path=path)], Tokenizer(), max_size=1000)


class WorkerKillingTokenizer(Tokenizer):
    """Kills the worker process that uses it, as the kernel's out-of-memory killer would."""

    def tokens_from_text(self, text, line_break=LINE_BREAK):
        if multiprocessing.parent_process() is not None:
            os._exit(1)
        return super().tokens_from_text(text, line_break)


def test_a_dead_encoding_worker_falls_back_to_this_process(tmp_path, monkeypatch, caplog):
    import keras_rnnlm.vocab as vocab

    vocabulary, (serial,) = _text_of_three_blocks(tmp_path / "a.txt")
    monkeypatch.setattr(vocab, "PARALLEL_BYTES", 0)
    fallback, (ids,) = build_vocabulary([Document("a", path=tmp_path / "a.txt")], WorkerKillingTokenizer(), max_size=1000)
    assert "encoding worker process died" in caplog.text
    assert fallback == vocabulary
    assert np.array_equal(ids, serial)


def test_a_script_without_main_guard_can_encode_in_workers(tmp_path):
    # Spawned workers would run an unguarded script again; they must not import it at all.
    script = tmp_path / "script.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "import keras_rnnlm.vocab as vocab\n"
        "from keras_rnnlm.corpus import Document\n"
        "from keras_rnnlm.tokenizer import Tokenizer\n"
        "print('script ran', flush=True)\n"
        "vocab.PARALLEL_BYTES = 0\n"
        "vocabulary, _ = vocab.build_vocabulary([Document('a', path=Path(sys.argv[1]))], Tokenizer(), max_size=1000)\n"
        "print('tokens', len(vocabulary))\n",
        encoding="utf-8",
    )
    vocabulary, _ = _text_of_three_blocks(tmp_path / "a.txt")
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "a.txt")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["script ran", f"tokens {len(vocabulary)}"]
