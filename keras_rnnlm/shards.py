"""A prepared corpus on disk: token shards, their manifest, and reading them back.

``python -m keras_rnnlm.prepare`` (:mod:`keras_rnnlm.prepare`) writes a folder::

    manifest.json        settings, token counts, every file's size and CRC-32
    vocabulary.txt       one token a line, line n = id n (as a run folder's)
    train-00000.bin ...  the training text's ids end to end, little-endian uint16 (uint32
                         when the vocabulary has more than 65,536 tokens), fixed-size shards
    train-segments.npy   int64: where each training segment (document part, or line) ends
    valid-00000.bin ...  the same for the validation text
    valid-segments.npy

Training opens it with :class:`PreparedCorpus`: the shards are not read at the start, so
a run starts in the same time and memory whatever the corpus' size; each batch reads
only its windows' bytes from them (:class:`ShardedTokens`).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from keras_rnnlm.config import toml_value
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.splits import Segments
from keras_rnnlm.vocab import Vocabulary

MANIFEST = "manifest.json"
FORMAT = "keras_rnnlm prepared corpus"
VERSION = 1
def prepared_settings(config, separate_valid: bool) -> dict:
    """The config values that decide the prepared ids: training with other values would
    read the ids as other tokens, or validate on other text. (``corpus.split`` counts only
    at word level, ``corpus.valid_fraction`` only without separate validation files, and
    ``train.seed`` only where it chose the held-out lines.)

    Args:
        config: A :class:`keras_rnnlm.config.Config`.
        separate_valid: Validation comes from separate files, not held out of the corpus.
    """
    settings = {
        "corpus.level": config.corpus.level,
        "corpus.split": config.corpus.split,
        "corpus.lowercase": config.corpus.lowercase,
        "corpus.sequences": config.corpus.sequences,
        "corpus.valid_fraction": config.corpus.valid_fraction,
        "vocab.max_size": config.vocab.max_size,
        "vocab.min_count": config.vocab.min_count,
        "train.seed": config.train.seed,
    }
    if config.corpus.level == "char":
        del settings["corpus.split"]
    if separate_valid:
        del settings["corpus.valid_fraction"]
    if separate_valid or config.corpus.sequences != "lines":
        del settings["train.seed"]
    return settings


def is_prepared(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a prepared corpus' manifest."""
    return (Path(path) / MANIFEST).is_file()


def prepared_corpus_path(config) -> Path | None:
    """The prepared corpus that ``config.corpus.paths`` names, or None when it names text.

    Raises:
        RnnlmError: A prepared corpus named beside other paths, or with ``corpus.valid_paths``.
    """
    prepared = [Path(path) for path in config.corpus.paths if is_prepared(path)]
    if not prepared:
        return None
    if len(config.corpus.paths) > 1:
        raise RnnlmError(f"{prepared[0]} is a prepared corpus and must be the only corpus path; prepare all the text into one folder")
    if config.corpus.valid_paths:
        raise RnnlmError(f"{prepared[0]} is a prepared corpus and holds its validation text; pass --valid to prepare, not to train")
    return prepared[0]


def token_dtype(vocabulary_size: int) -> np.dtype:
    """The smallest unsigned type that holds every id: uint16 up to 65,536 tokens."""
    return np.dtype("<u2") if vocabulary_size <= 1 << 16 else np.dtype("<u4")


def file_crc32(path: Path, block: int = 1 << 24) -> int:
    """The CRC-32 of a file (zlib's: about 5 GB/s here, so checking every start is cheap)."""
    crc = 0
    with open(path, "rb") as file:
        while data := file.read(block):
            crc = zlib.crc32(data, crc)
    return crc


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:05d}.bin"


def segments_name(split: str) -> str:
    return f"{split}-segments.npy"


class PreparedCorpus:
    """A folder written by ``python -m keras_rnnlm.prepare``, read back.

    Args:
        path: The folder.

    Raises:
        RnnlmError: The folder has no manifest, or one this version cannot read.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            raise RnnlmError(f"{self.path} is not a prepared corpus (no {MANIFEST}); run python -m keras_rnnlm.prepare --out {self.path}")
        try:
            self.manifest = json.loads(manifest.read_text(encoding="utf-8"))
            if not isinstance(self.manifest, dict) or (self.manifest.get("format"), self.manifest.get("version")) != (FORMAT, VERSION):
                raise RnnlmError(f"{manifest} is not a version-{VERSION} keras_rnnlm manifest; prepare the corpus again "
                                 "with --overwrite")
            _check_manifest(self.manifest)
        except OSError as error:
            raise RnnlmError(f"cannot read {manifest} ({error.strerror}); check its permissions") from None
        except (ValueError, RecursionError) as error:  # JSON that is not, or not the manifest prepare writes
            reason = str(error) if isinstance(error, _Damaged) else "not JSON"
            raise RnnlmError(f"{manifest} is damaged ({reason}); prepare the corpus again with --overwrite") from None

    @property
    def settings(self) -> dict:
        return self.manifest["settings"]

    @property
    def separate_valid(self) -> bool:
        return bool(self.manifest["valid_sources"])

    def check_settings(self, config) -> None:
        """Refuses a config whose tokenizer, vocabulary or split differs from the one the
        corpus was prepared with.

        Raises:
            RnnlmError: Naming the first key that differs, both values and the fix.
        """
        wanted = prepared_settings(config, self.separate_valid)
        for key, value in self.settings.items():
            if wanted.get(key) != value:
                raise RnnlmError(
                    f"{key} = {toml_value(wanted.get(key))} differs from the {toml_value(value)} that {self.path} was prepared with; "
                    f"pass --set {key}={toml_value(value)}, or prepare the corpus again with these settings"
                )

    def check_files(self, checksums: bool = True) -> None:
        """Checks that every file the manifest lists is there, whole and unchanged.

        Args:
            checksums: Also compare every file's CRC-32 (about 0.2 s a GB), not only its size.

        Raises:
            RnnlmError: Naming the missing, truncated or altered file.
        """
        for name, expected in self.manifest["files"].items():
            path = self.path / name
            if not path.is_file():
                raise RnnlmError(f"{path} is missing; prepare the corpus again (the same command resumes) or restore the file")
            if path.stat().st_size != expected["bytes"]:
                raise RnnlmError(
                    f"{path} has {path.stat().st_size:,} bytes where the manifest says {expected['bytes']:,} (truncated or "
                    "replaced); prepare the corpus again with --overwrite or restore the file"
                )
            if checksums and file_crc32(path) != expected["crc32"]:
                raise RnnlmError(f"{path} is altered (its CRC-32 differs from the manifest's); prepare the corpus again with --overwrite or restore the file")

    def vocabulary(self) -> Vocabulary:
        return Vocabulary.load(self.path / "vocabulary.txt")

    def segments(self, split: str):
        """The ``split`` ("train" or "valid") text as :class:`~keras_rnnlm.splits.Segments`
        read from the shards as needed (the segment ends memory-mapped: a binary search
        touches a few pages of them)."""
        part = self.manifest["splits"][split]
        files = [self.path / shard_name(split, number) for number in range(len(part["shards"]))]
        tokens = ShardedTokens(files, np.dtype(self.manifest["dtype"]), self.manifest["shard_tokens"], part["tokens"])
        return Segments(tokens, np.load(self.path / segments_name(split), mmap_mode="r"))

    def describe(self) -> str:
        sources = [source["name"] for source in self.manifest["sources"]]
        names = ", ".join(sources) if len(sources) <= 3 else f"{', '.join(sources[:2])}, ... {sources[-1]}"
        return (f"prepared corpus {self.path}: {self.manifest['corpus_tokens']:,} tokens from {len(sources)} document(s) "
                f"({names}), vocabulary {self.manifest['vocabulary_size']:,}")


class _Damaged(ValueError):
    """A manifest that is not as prepare writes it; the message names the first wrong part."""


def _check_manifest(manifest: dict) -> None:
    """Checks a manifest's parts before any is used: their types, ranges, and file names
    that stay inside the folder.

    Raises:
        _Damaged: Naming the first part that is not as prepare writes it.
    """
    def expect(ok, what):
        if not ok:
            raise _Damaged(what)

    def count(value):  # a whole number of something: an int, not a bool
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    for key, kind in (("settings", dict), ("sources", list), ("valid_sources", list), ("dtype", str),
                      ("splits", dict), ("files", dict)):
        expect(isinstance(manifest.get(key), kind), f"{key} is missing or not a JSON {'object' if kind is dict else kind.__name__}")
    for key in ("shard_tokens", "vocabulary_size", "corpus_tokens"):
        expect(count(manifest.get(key)), f"{key} is missing or not a whole number")
    expect(manifest["shard_tokens"] >= 1, "shard_tokens is 0")
    expect(manifest["dtype"] in ("<u2", "<u4"), f"dtype {manifest['dtype']!r} is not <u2 or <u4")
    expect(all(isinstance(key, str) and isinstance(value, (str, int, float, bool)) for key, value in manifest["settings"].items()),
           "settings holds a value that is not a number, string or boolean")
    for key in ("sources", "valid_sources"):
        expect(all(isinstance(source, dict) and isinstance(source.get("name"), str) and count(source.get("size"))
                   for source in manifest[key]), f"{key} holds an entry without a name and a size")
    for split in ("train", "valid"):
        part = manifest["splits"].get(split)
        expect(isinstance(part, dict) and count(part.get("tokens")) and count(part.get("segments"))
               and isinstance(part.get("shards"), list), f"splits.{split} is missing or not tokens, segments and shards")
        expect(part["shards"] == [shard_name(split, number) for number in range(len(part["shards"]))],
               f"splits.{split}.shards are not {split}-00000.bin and on")
    for name, entry in manifest["files"].items():
        expect("/" not in name and name not in ("", ".", ".."), f"files names {name!r}, which is not a file of the folder")
        expect(isinstance(entry, dict) and count(entry.get("bytes")) and count(entry.get("crc32")),
               f"files.{name} is not bytes and crc32, as whole numbers")
    for split in ("train", "valid"):
        for name in [*manifest["splits"][split]["shards"], segments_name(split)]:
            expect(name in manifest["files"], f"files does not list {name}")


class ShardedTokens:
    """Token ids stored in fixed-size shard files: indexed like a 1-D NumPy array by an
    integer array of positions, it returns their ids, reading only those bytes.

    Each run of consecutive positions (a window and its target, a lane's step) is one
    ``os.pread``; the kernel's page cache keeps what was read, outside this process.
    Memory-mapping the shards would be the usual way, and was measured worse here: a random
    read through a map made the kernel map a whole large folio of the page cache into the
    process (hundreds of KB a read on Linux 6.18), so its resident memory grew with every
    batch until it held much of the corpus; ``pread`` copies only the bytes asked for, at
    a cost of about a millisecond a batch of 256 windows, beside a training step of tens
    (``benchmarks/mapped_reads.py``, figures in benchmarks/RESULTS.md).

    Args:
        files: The shards in order; each but the last holds ``shard_tokens`` ids.
        dtype: The ids' type on disk.
        shard_tokens: Ids per full shard.
        total: Ids in all shards.
    """

    def __init__(self, files: list[Path], dtype: np.dtype, shard_tokens: int, total: int):
        self.dtype, self.shard_tokens, self.total = np.dtype(dtype), shard_tokens, total
        self._files = [os.open(path, os.O_RDONLY) for path in files]

    def __del__(self):
        for descriptor in getattr(self, "_files", ()):
            os.close(descriptor)

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, positions) -> np.ndarray:
        """The ids at ``positions`` (an integer array of any shape, or a slice), as int32."""
        if isinstance(positions, slice):
            start, stop, step = positions.indices(self.total)
            if step == 1:
                return self._read_runs([start], [max(stop - start, 0)]).astype(np.int32)
            positions = np.arange(start, stop, step)
        positions = np.asarray(positions, np.int64)
        flat = positions.ravel()
        if not flat.size:
            return np.zeros(positions.shape, np.int32)
        if flat.min() < 0 or flat.max() >= self.total:
            raise IndexError(f"token positions must lie in [0, {self.total}), got {flat.min()} to {flat.max()}")
        firsts = np.flatnonzero(np.diff(flat) != 1) + 1  # where a run of consecutive positions starts
        starts = np.concatenate([[0], firsts])
        lengths = np.diff(np.concatenate([starts, [flat.size]]))
        return self._read_runs(flat[starts].tolist(), lengths.tolist()).astype(np.int32).reshape(positions.shape)

    def _read_runs(self, starts: list[int], lengths: list[int]) -> np.ndarray:
        """The ids of runs of consecutive positions, end to end."""
        size, pieces = self.dtype.itemsize, []
        for start, length in zip(starts, lengths, strict=True):
            while length > 0:  # a run may cross into the next shard
                shard, offset = divmod(start, self.shard_tokens)
                count = min(length, self.shard_tokens - offset)
                pieces.append(os.pread(self._files[shard], count * size, offset * size))
                start, length = start + count, length - count
        return np.frombuffer(b"".join(pieces), self.dtype)

    def chunks(self, size: int = 1 << 22) -> Iterator[np.ndarray]:
        """The ids in order, ``size`` at a time (int32)."""
        for start in range(0, self.total, size):
            yield self[start : min(start + size, self.total)]
