"""Encoding in worker processes gives the ids encoding in this process gives."""

import multiprocessing
import os
import subprocess
import sys

import numpy as np

from keras_rnnlm import encoding
from keras_rnnlm.corpus import Document
from keras_rnnlm.tokenizer import LINE_BREAK, Tokenizer
from keras_rnnlm.vocab import build_vocabulary, encode_documents


def test_a_large_corpus_encodes_the_same_in_worker_processes(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    words = np.array([f"w{number}" for number in range(5000)] + [",", "don't", "Naïve"])
    lines = [" ".join(rng.choice(words, 12)) for _ in range(40_000)]  # about 3 MB: three blocks
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("\n".join(lines), encoding="utf-8")
    second.write_text("tail words never seen w1\n", encoding="utf-8")
    documents = [Document("a", path=first), Document("b", path=second)]

    serial = build_vocabulary(documents, Tokenizer(), max_size=3000)
    monkeypatch.setattr(encoding, "PARALLEL_BYTES", 0)
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
    vocabulary, (serial,) = _text_of_three_blocks(tmp_path / "a.txt")
    monkeypatch.setattr(encoding, "PARALLEL_BYTES", 0)
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
        "import keras_rnnlm.encoding as encoding\n"
        "import keras_rnnlm.vocab as vocab\n"
        "from keras_rnnlm.corpus import Document\n"
        "from keras_rnnlm.tokenizer import Tokenizer\n"
        "print('script ran', flush=True)\n"
        "encoding.PARALLEL_BYTES = 0\n"
        "vocabulary, _ = vocab.build_vocabulary([Document('a', path=Path(sys.argv[1]))], Tokenizer(), max_size=1000)\n"
        "print('tokens', len(vocabulary))\n",
        encoding="utf-8",
    )
    vocabulary, _ = _text_of_three_blocks(tmp_path / "a.txt")
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "a.txt")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["script ran", f"tokens {len(vocabulary)}"]
