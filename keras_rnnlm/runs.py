"""A run folder: everything one training run writes, and reading it back.

``saved_models/<run>/`` holds ``model.keras`` (the best epoch so far), ``vocabulary.txt``,
``config.toml`` (the config actually used), ``history.csv``, ``curves.png``,
``summary.json``, TensorBoard ``logs/`` and, while training, ``backup/`` for resuming.
Every file is written to a temporary path and renamed into place, so an interrupted
save never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import json
import math
import os
import socket
import typing
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from keras_rnnlm.config import RUN_CONFIG, Config, config_from_dict, config_to_dict, config_to_toml, read_toml
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.files import LOCK_SUFFIX, Owned, not_a_file, write_atomically, written_atomically, written_folder
from keras_rnnlm.tokenizer import Tokenizer
from keras_rnnlm.vocab import Vocabulary

NEW, RESUME, FINISHED = "new", "resume", "finished"
CACHE_FILE = "cache.json"
DYNAMIC_FILE = "dynamic.json"


class RunFolder:
    """The paths of one run and the decision whether to start, resume or refuse.

    Args:
        path: The run's folder, e.g. ``saved_models/psalms``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.model = self.path / "model.keras"
        self.vocabulary = self.path / "vocabulary.txt"
        self.config = self.path / RUN_CONFIG
        self.history = self.path / "history.csv"
        self.curves = self.path / "curves.png"
        self.summary = self.path / "summary.json"
        self.logs = self.path / "logs"
        self.backup = self.path / "backup"
        self.backup_file = self.backup / "latest.npz"

    def state(self, config: Config, overwrite: bool = False) -> str:
        """Decides what training into this folder means, without writing anything.

        Returns:
            NEW (an absent or empty folder, one that keras_rnnlm started but never wrote
            a config into, or ``overwrite``), RESUME (an unfinished run with the same
            config and a backup to resume from, or none begun yet) or FINISHED (a
            finished run with the same config).

        Raises:
            RnnlmError: The folder holds anything keras_rnnlm did not write (whatever
                ``overwrite`` says), a run with a different config, or a run that
                cannot resume exactly.
        """
        owned = Owned(self.path, "run")
        owned.check("choose another --run-name")
        if overwrite or not owned.holds_anything() or not self.config.is_file():
            return NEW
        previous = self.load_config()
        if previous != config:
            raise RnnlmError(
                f"{self.path} holds a run with a different config ({_differences(previous, config)}); "
                "pass --overwrite to replace it or --run-name NAME to start another"
            )
        if self.summary.is_file():
            return FINISHED
        rows = self.read_history()  # a damaged history is named now, not after TensorFlow loads
        if not self.backup_file.is_file() and (rows or self.model.is_file()):
            raise RnnlmError(
                f"{self.path} holds an unfinished run with no backup to resume from (its backup/ was removed); "
                "pass --overwrite to train it again from the start, or --run-name NAME to start another"
            )
        return RESUME

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Holds the run folder for this process while it trains.

        The lock is an advisory ``flock`` on ``.<name>.keras_rnnlm-lock`` beside the folder
        (beside it, so that a refused or failed start leaves the folder as it was). The operating
        system releases it when the process ends in any way, ``kill -9`` included, so a
        lock left by a killed run is simply taken over.

        Raises:
            RnnlmError: Another live process is training into this folder.
        """
        made_parent = not self.path.parent.exists()
        lock_path = self.path.with_name(f".{self.path.name}{LOCK_SUFFIX}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            file = open(lock_path, "a+")  # noqa: SIM115 - closed by the with below
        except OSError as error:
            raise RnnlmError(f"cannot write in {self.path.parent} ({error.strerror}); choose an --output-dir you may "
                             "write to") from None
        with file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.seek(0)
                holder = file.read().strip() or "another process"
                raise RnnlmError(
                    f"{self.path} is being trained by {holder}; wait for it to finish or stop it, "
                    "or train into another folder with --run-name NAME"
                ) from None
            file.seek(0)
            file.truncate()
            file.write(f"process {os.getpid()} on {socket.gethostname()}\n")
            file.flush()
            try:
                yield
            finally:
                lock_path.unlink(missing_ok=True)  # still locked here: no other process holds it
                if made_parent and not any(self.path.parent.iterdir()):
                    self.path.parent.rmdir()  # a refused first run leaves no empty runs folder

    def create(self, config: Config, vocabulary: Vocabulary) -> None:
        """Starts a new run: the folder with its marker, config and vocabulary, in place at
        once (built under a temporary name and renamed), replacing what an earlier run of
        keras_rnnlm's left (:meth:`state` refused a folder holding anything else)."""
        with written_folder(self.path) as partial:
            Owned(partial, "run").claim()
            vocabulary.save(partial / self.vocabulary.name)
            write_atomically(partial / self.config.name, config_to_toml(config))

    def load_config(self) -> Config:
        """The run's ``config.toml``; one written by an earlier version is read as it meant.

        Raises:
            RnnlmError: The folder has no ``config.toml``, or it is not a valid config.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RnnlmError(f"{self.path} {not_a_file(self.path).replace('not a file', 'not a run folder')}; "
                             "pass --model saved_models/<run>")
        if not self.config.is_file():
            raise RnnlmError(f"{self.path} is not a keras_rnnlm run (no config.toml); pass --model saved_models/<run>")
        return config_from_dict(_upgraded(read_toml(self.config, "the run's config", "saved_models/<run>/config.toml")))

    def load_model(self):
        """Loads ``model.keras`` (:func:`keras_rnnlm.model.load_model`).

        Raises:
            RnnlmError: The run has no model yet.
        """
        self.require_model()
        from keras_rnnlm.model import load_model  # Keras loads only when a model is needed

        return load_model(self.model)

    def require_model(self) -> None:
        """Refuses a run with no ``model.keras`` yet, or one that is not a whole .keras
        archive (cut off or overwritten: told before Keras loads).

        Raises:
            RnnlmError: Saying which.
        """
        if not self.model.is_file():
            raise RnnlmError(f"{self.path} has no model.keras yet; train it first with python -m keras_rnnlm.train")
        if not zipfile.is_zipfile(self.model):
            raise RnnlmError(f"{self.model} is damaged: it is not a whole .keras archive (cut off or overwritten); "
                             "train the run again with --overwrite, or restore the file")

    def load(self) -> tuple[Config, Vocabulary, Tokenizer, object]:
        """Reads back what generation and evaluation need: config, vocabulary, tokenizer, model.

        Raises:
            RnnlmError: A file is missing or damaged, or the vocabulary and the model disagree.
        """
        config = self.load_config()
        vocabulary, model = Vocabulary.load(self.vocabulary), self.load_model()
        window_size = None if config.data.mode == "bptt" else config.data.window_size
        if model.input_shape[1] != window_size:
            says = 'data.mode = "bptt"' if window_size is None else f"data.window_size = {window_size}"
            reads = "any number of tokens" if model.input_shape[1] is None else f"windows of {model.input_shape[1]} tokens"
            raise RnnlmError(
                f"{self.config} says {says} but {self.model} reads {reads}: one of the two was changed; restore "
                "config.toml, or train the run again with --overwrite"
            )
        if model.output_shape[-1] != len(vocabulary):
            raise RnnlmError(
                f"{self.vocabulary} lists {len(vocabulary):,} tokens but the model scores {model.output_shape[-1]:,}: "
                "one of the two was changed; train the run again with --overwrite, or restore the files"
            )
        return config, vocabulary, Tokenizer.from_config(config.corpus), model

    def keep_history(self, epochs: int) -> None:
        """Keeps the first ``epochs`` rows of ``history.csv``: a run resumed from the
        backup of that epoch writes the later ones again."""
        if not self.history.is_file():
            return
        lines = self.history.read_text(encoding="utf-8").splitlines(keepends=True)
        if epochs == 0:
            self.history.unlink()
        elif len(lines) > epochs + 1:  # the header and one row an epoch
            write_atomically(self.history, "".join(lines[: epochs + 1]))

    def read_history(self) -> list[dict[str, float]]:
        """The rows of ``history.csv`` (Keras' CSVLogger: one an epoch) as numbers; none
        before the first epoch ends.

        Raises:
            RnnlmError: The file is not such a table (edited, or cut off by a crash).
        """
        if not self.history.is_file():
            return []
        with open(self.history, newline="", encoding="utf-8", errors="replace") as file:
            rows = list(csv.DictReader(file))
        try:
            return [{key: float(value) for key, value in row.items()} for row in rows]
        except (TypeError, ValueError):
            raise RnnlmError(
                f"{self.history} is damaged (a row that is not numbers); delete it to keep training, or train again "
                "with --overwrite"
            ) from None

    def best_validation_loss(self) -> float:
        """The lowest val_loss in history.csv (inf when there is none yet)."""
        losses = [row["val_loss"] for row in self.read_history()]
        return min((loss for loss in losses if not math.isnan(loss)), default=math.inf)


def latest_run(output_dir: str | Path = "saved_models") -> Path:
    """The run folder in ``output_dir`` whose model was saved last.

    Raises:
        RnnlmError: There is no trained run there.
    """
    models = sorted(Path(output_dir).glob("*/model.keras"), key=lambda path: path.stat().st_mtime)
    if not models:
        raise RnnlmError(f"no trained run in {output_dir}/; train one with python -m keras_rnnlm.train, or pass --model")
    return models[-1].parent


def write_summary(run: RunFolder, summary: dict) -> None:
    write_atomically(run.summary, json.dumps(summary, indent=2) + "\n")


def save_model_atomically(model, path: Path) -> None:
    """Saves a ``.keras`` file to a temporary name, then renames it into place.

    ``keras.callbacks.ModelCheckpoint`` writes straight to its target, so a run killed
    mid-save would leave a broken ``model.keras``; this is why the run saves its own.
    """
    with written_atomically(path) as temporary:
        model.save(temporary)


def _upgraded(values: dict) -> dict:
    """A run config written by an earlier version, in today's keys: ``train.mixed_precision``
    (true or false) became ``train.precision``; ``data.char_window_size``, the window of
    a character model, became ``data.window_size`` at either level."""
    values = {key: dict(table) if isinstance(table, dict) else table for key, table in values.items()}
    train, data, corpus = (values.get(section, {}) for section in ("train", "data", "corpus"))
    if "mixed_precision" in train:
        train.setdefault("precision", "mixed" if train.pop("mixed_precision") is True else "float32")
    if "char_window_size" in data:
        char_window_size = data.pop("char_window_size")
        if corpus.get("level") == "char":
            data["window_size"] = char_window_size
    return values


def _differences(before: Config, after: Config) -> str:
    old, new = config_to_dict(before), config_to_dict(after)
    changes = []
    for section in new:
        if isinstance(new[section], dict):
            changes += [
                f"{section}.{key}: {old[section][key]!r} -> {value!r}"
                for key, value in new[section].items()
                if old[section][key] != value
            ]
        elif old[section] != new[section]:
            changes.append(f"{section}: {old[section]!r} -> {new[section]!r}")
    return "; ".join(changes)


class FittedSettings:
    """Settings ``evaluate`` fits on validation text and keeps in a run folder as JSON:
    a subclass is a frozen dataclass naming its ``FILE``, the ``FLAG`` that fits it and
    ``WHAT`` it sets, and saying which values are sound (``sound``)."""

    FILE: typing.ClassVar[str]
    FLAG: typing.ClassVar[str]
    WHAT: typing.ClassVar[str]

    def save(self, run_dir: str | Path) -> None:
        """Keeps the settings in the run folder (listed in its marker first: a run from
        before they existed has a marker without them)."""
        Owned(run_dir, "run").claim(self.FILE)
        write_atomically(Path(run_dir) / self.FILE, json.dumps(dataclasses.asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, run_dir: str | Path):
        """The settings fitted for a run.

        Raises:
            RnnlmError: The run has none, or the file is damaged.
        """
        path = Path(run_dir) / cls.FILE
        if not path.is_file():
            raise RnnlmError(f"{run_dir} has no fitted {cls.WHAT} ({cls.FILE}); fit one on validation text first: "
                             f"python -m keras_rnnlm.evaluate --model {run_dir} --text VALID.txt {cls.FLAG}")
        try:
            settings = cls(**json.loads(path.read_text(encoding="utf-8")))
            if not settings.sound():
                raise ValueError
            return settings
        except (ValueError, TypeError, OSError):
            raise RnnlmError(f"{path} is damaged; fit the {cls.WHAT} again with evaluate {cls.FLAG}") from None

    def sound(self) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class CacheSettings(FittedSettings):
    """How a run's continuous cache (:mod:`keras_rnnlm.cache`) scores: ``size`` states
    remembered per lane, the sharpness ``theta`` of their vote, the share ``lam``
    (lambda) of the cache in the mixture; and the validation cross-entropies (nats per
    token) with and without it that chose them."""

    FILE: typing.ClassVar[str] = CACHE_FILE
    FLAG: typing.ClassVar[str] = "--fit-cache"
    WHAT: typing.ClassVar[str] = "cache"

    size: int
    theta: float
    lam: float
    valid_cross_entropy: float = math.nan
    valid_cross_entropy_without: float = math.nan

    def sound(self) -> bool:
        return self.size >= 1 and self.theta > 0 and 0 <= self.lam <= 1

    def describe(self) -> str:
        return f"{self.size} states, theta {self.theta:g}, lambda {self.lam:g}"


@dataclass(frozen=True)
class DynamicSettings(FittedSettings):
    """How a run's text is scored by dynamic evaluation (:mod:`keras_rnnlm.dynamic`): the
    gradient step's ``learning_rate`` (0: off) and the ``decay`` toward the trained
    weights; and the validation cross-entropies (nats per token) with and without it
    that chose them. ``cache_size``, ``cache_theta`` and ``cache_lam``: the continuous
    cache fitted on the same pass, mixed into it (``cache_size`` 0: none, as in a file
    from before they were fitted together), and the cross-entropy with it."""

    FILE: typing.ClassVar[str] = DYNAMIC_FILE
    FLAG: typing.ClassVar[str] = "--fit-dynamic"
    WHAT: typing.ClassVar[str] = "dynamic evaluation"

    learning_rate: float
    decay: float
    valid_cross_entropy: float = math.nan
    valid_cross_entropy_without: float = math.nan
    cache_size: int = 0
    cache_theta: float = 0.0
    cache_lam: float = 0.0
    valid_cross_entropy_with_cache: float = math.nan

    def sound(self) -> bool:
        cache = self.cache_size == 0 or self.cache().sound()
        return self.learning_rate >= 0 and 0 <= self.decay < 1 and cache

    def cache(self) -> "CacheSettings | None":
        """The cache fitted for the dynamic pass; None if there is none."""
        if not self.cache_size:
            return None
        return CacheSettings(self.cache_size, self.cache_theta, self.cache_lam, self.valid_cross_entropy_with_cache,
                             self.valid_cross_entropy)

    def describe(self) -> str:
        return f"learning rate {self.learning_rate:g}, decay {self.decay:g}"
