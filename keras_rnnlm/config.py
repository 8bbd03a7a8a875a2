"""The typed configuration of a run: frozen dataclasses loaded from TOML.

The dataclasses below are the single source of truth for every setting and its default;
``configs/default.toml`` mirrors them field for field. A config file or a ``--set``
override with an unknown key or a value of the wrong type raises :class:`RnnlmError`
naming the key (and the nearest valid key, for a typo).

Example:
    >>> config = load_config("configs/tiny.toml", overrides=["model.units=64"])
    >>> config.model.units
    64
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

from keras_rnnlm.errors import RnnlmError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class CorpusConfig:
    """Where the text comes from and how it is cut into tokens."""

    # Text files or folders of .txt files; empty means the built-in corpus.
    paths: tuple[str, ...] = ()
    # Built-in corpus used when `paths` is empty: "kjv-poetry" or "kjv".
    builtin: str = "kjv-poetry"
    # Separate validation files; empty means hold out the end of each file.
    valid_paths: tuple[str, ...] = ()
    # Share held out for validation: the end of each file ("stream"), or random lines ("lines").
    valid_fraction: float = 0.1
    # "stream": one running text, windows cross lines (lyrics, prose); "lines": every line is
    # its own sequence, started from padding and ended by the line break (names, sentences).
    sequences: str = "stream"
    # "word": words, punctuation and line breaks are tokens; "char": every character is.
    level: str = "word"
    # Word level only: "punctuation" splits punctuation off words; "whitespace" trusts
    # text that is already tokenized (WikiText).
    split: str = "punctuation"
    # Lower-case the text before tokenizing.
    lowercase: bool = True


@dataclass(frozen=True)
class VocabConfig:
    """Which tokens get their own id; the rest become <unk>."""

    # Most tokens kept, reserved tokens included.
    max_size: int = 10_000
    # Tokens seen fewer times than this become <unk>.
    min_count: int = 1


@dataclass(frozen=True)
class DataConfig:
    """How the token stream becomes training examples."""

    # "windows": every example is window_size tokens and the one target after them.
    # "bptt": truncated backpropagation through time: batch_size lanes read the text in
    # order, bptt_steps tokens a step, a target at every position, the recurrent state
    # carried from step to step (long context).
    mode: str = "windows"
    # Windows mode: tokens of context in each example (words, or characters at character
    # level). A character model sets its own, larger window in its config
    # (configs/names.toml: 16, which holds every name of the list whole).
    window_size: int = 5
    # Bptt mode: tokens each lane reads per step; the gradient stops at the step's start.
    bptt_steps: int = 35
    # Windows per training step, or lanes in bptt mode.
    batch_size: int = 256


@dataclass(frozen=True)
class ModelConfig:
    """The Embedding -> recurrent layers -> Dense softmax network."""

    # Recurrent cell: "lstm", "gru" or "simple_rnn".
    cell: str = "lstm"
    # Size of each token's embedding vector.
    embedding_dim: int = 128
    # Units in each recurrent layer.
    units: int = 256
    # Number of stacked recurrent layers.
    layers: int = 1
    # Dropout after each recurrent layer, in [0, 1).
    dropout: float = 0.2
    # Dropout on the recurrent state, in [0, 1); above 0 the fused cuDNN kernel is off.
    recurrent_dropout: float = 0.0
    # Dropout on the token vectors, in [0, 1), as the PyTorch word-language-model example.
    embedding_dropout: float = 0.0
    # The output layer uses the embedding matrix (transposed) as its kernel (Press & Wolf
    # 2017): fewer parameters, usually better perplexity. Needs embedding_dim == units.
    tie_embeddings: bool = False
    # "full": every training step computes the softmax over the whole vocabulary;
    # "sampled": over the targets and `sampled_candidates` tokens drawn from a Zipf
    # distribution (much faster for a large vocabulary). Validation, evaluation,
    # generation and export always use the full softmax.
    softmax: str = "full"
    # Sampled softmax: tokens drawn each step, fewer than the vocabulary.
    sampled_candidates: int = 1024


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation loop, its callbacks and where it runs."""

    # Most epochs; early stopping may end sooner.
    epochs: int = 20
    # Training steps in an epoch (validation, checkpoint, sample and backup come at its
    # end); 0 = one pass over the training text. A large corpus sets it so that a model is
    # judged and saved every hour or so, not once a day; the next epoch reads on from where
    # the last stopped.
    steps_per_epoch: int = 0
    # "adam" or "sgd".
    optimizer: str = "adam"
    # Step size of the optimizer.
    learning_rate: float = 0.001
    # Clip gradients to this global norm; 0 turns clipping off.
    clipnorm: float = 1.0
    # Stop after this many epochs without a better validation loss; 0 turns it off.
    early_stopping_patience: int = 3
    # Halve the learning rate after this many epochs without improvement; 0 turns it off.
    reduce_lr_patience: int = 0
    # Seeds Python, NumPy and TensorFlow: same seed and config, same run.
    seed: int = 1234
    # "auto" (GPUs if any, else CPU), "cpu" or "gpu".
    device: str = "auto"
    # "auto", "float32" or "mixed" (float16 on GPU, bfloat16 on CPU; the softmax stays
    # float32). "auto" is mixed on a GPU that has float16 units and on a CPU whose
    # bfloat16 matmul measures faster than float32 (benchmarks/RESULTS.md), else float32.
    precision: str = "auto"
    # Prompt for the sample printed after each epoch; empty uses the validation text's start.
    sample_prompt: str = ""
    # Tokens in the sample printed after each epoch; 0 turns the sample off.
    sample_length: int = 30
    # Sampling temperature of that sample; lower is safer, higher is more varied.
    sample_temperature: float = 0.8
    # Write TensorBoard logs to <run>/logs.
    tensorboard: bool = True
    # Also back up every this many steps inside an epoch, for long epochs; 0 = at epoch ends only.
    backup_every_steps: int = 0


@dataclass(frozen=True)
class Config:
    """Everything that defines a run."""

    # Name of the run: its folder is saved_models/<name> unless --run-name says otherwise.
    name: str = "psalms"
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def check_vocabulary(self, vocabulary_size: int) -> None:
        """Refuses settings that the vocabulary, once built, makes impossible.

        Raises:
            RnnlmError: Sampled softmax with no fewer candidates than tokens.
        """
        if self.model.softmax == "sampled" and self.model.sampled_candidates >= vocabulary_size:
            raise RnnlmError(
                f"model.sampled_candidates = {self.model.sampled_candidates} is not below the vocabulary's "
                f'{vocabulary_size:,} tokens; set it lower, or model.softmax = "full" (for a vocabulary this small the '
                "full softmax is cheap)"
            )

    def check_replicas(self, replicas: int, workers: int = 0) -> None:
        """Refuses settings that cannot train on ``replicas`` devices, spread over
        ``workers`` machines (0: one machine).

        Raises:
            RnnlmError: Bptt mode on several devices; across workers, a batch that does
                not divide among the replicas, or backups inside epochs.
        """
        if self.data.mode == "bptt" and replicas > 1:
            fix = ("train it on one machine, without TF_CONFIG" if workers else
                   "pass --device cpu, or make one GPU visible with CUDA_VISIBLE_DEVICES=0")
            raise RnnlmError(
                f'data.mode = "bptt" trains on one device (its lanes carry their state from step to step), and '
                f"{replicas} were found; {fix}"
            )
        if not workers:
            return
        if self.data.batch_size % replicas:
            devices = "" if replicas == workers else f" ({workers} workers, {replicas // workers} devices each)"
            raise RnnlmError(
                f"data.batch_size = {self.data.batch_size} does not divide among {replicas} replicas{devices}; set it "
                f"to a multiple of {replicas} (each device reads batch_size / {replicas} windows a step)"
            )
        if self.train.backup_every_steps:
            raise RnnlmError("train.backup_every_steps must be 0 across workers: a run resumes from its last epoch's backup")


CHOICES = {
    "corpus.builtin": ("kjv-poetry", "kjv"),
    "corpus.level": ("word", "char"),
    "corpus.split": ("punctuation", "whitespace"),
    "corpus.sequences": ("stream", "lines"),
    "data.mode": ("windows", "bptt"),
    "model.cell": ("lstm", "gru", "simple_rnn"),
    "model.softmax": ("full", "sampled"),
    "train.optimizer": ("adam", "sgd"),
    "train.device": ("auto", "cpu", "gpu"),
    "train.precision": ("auto", "float32", "mixed"),
}



def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Reads a TOML config and applies ``section.key=value`` overrides.

    Args:
        path: A TOML file mirroring :class:`Config`; None uses the defaults.
        overrides: Strings like ``"model.units=512"`` or ``"corpus.level=char"``.
            Values are read as TOML; a bare word is taken as a string.

    Returns:
        The validated, frozen :class:`Config`.

    Raises:
        RnnlmError: The file is missing or not TOML, a key is unknown, a value has the
            wrong type or lies outside its range.
    """
    values = read_toml(path) if path is not None else {}
    for override in overrides:
        key, value = _parse_override(override)
        *sections, name = key.split(".")
        table = values
        for section in sections:
            table = table.setdefault(section, {})
            if not isinstance(table, dict):
                raise RnnlmError(f"cannot set {key}: {section} is a value, not a section")
        table[name] = value
    return config_from_dict(values)


def read_toml(path: str | Path, what: str = "config file", example: str = "configs/default.toml") -> dict:
    """The tables of a TOML file, as nested dictionaries.

    Args:
        path: The file.
        what, example: What the file is and a path of one, for the error messages.

    Raises:
        RnnlmError: The file is missing or is not TOML.
    """
    path = Path(path)
    if not path.is_file():
        raise RnnlmError(f"{what} {path} does not exist; pass a path such as {example}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise RnnlmError(f"{what} {path} is not valid TOML ({error}); fix the line it names") from None


def config_from_dict(values: dict) -> Config:
    """Builds a validated :class:`Config` from nested dictionaries (as TOML gives).

    Raises:
        RnnlmError: On an unknown key, a wrong type or an out-of-range value.
    """
    config = _build(Config, values, prefix="")
    validate(config)
    return config


def config_to_dict(config: Config) -> dict:
    """Returns the config as nested dictionaries of plain values (lists, not tuples)."""

    def plain(value):
        return list(value) if isinstance(value, tuple) else value

    result = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            result[f.name] = {g.name: plain(getattr(value, g.name)) for g in dataclasses.fields(value)}
        else:
            result[f.name] = plain(value)
    return result


def config_to_toml(config: Config) -> str:
    """Writes the config as TOML text that :func:`load_config` reads back unchanged."""
    lines = []
    tables = []
    for key, value in config_to_dict(config).items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {toml_value(value)}")
    for table, entries in tables:
        lines.append(f"\n[{table}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in entries.items())
    return "\n".join(lines) + "\n"


def validate(config: Config) -> None:
    """Checks ranges and choices that the types alone do not express.

    Raises:
        RnnlmError: Naming the first value out of range and the range it must lie in.
    """
    for key, allowed in CHOICES.items():
        value = _get(config, key)
        if value not in allowed:
            raise RnnlmError(f"{key} = {value!r} is not one of {', '.join(map(repr, allowed))}")
    checks = [
        ("corpus.valid_fraction", 0.0 < config.corpus.valid_fraction < 1.0, "between 0 and 1 (exclusive)"),
        ("vocab.max_size", 4 <= config.vocab.max_size <= 10_000_000, "between 4 (three reserved tokens and one word) and 10,000,000"),
        ("vocab.min_count", config.vocab.min_count >= 1, "at least 1"),
        # The upper bounds keep a typo from asking for more memory than any machine has.
        ("data.window_size", 1 <= config.data.window_size <= 10_000, "between 1 and 10,000 (longer context: data.mode = \"bptt\")"),
        ("data.bptt_steps", 1 <= config.data.bptt_steps <= 10_000, "between 1 and 10,000"),
        ("data.batch_size", 1 <= config.data.batch_size <= 1_000_000, "between 1 and 1,000,000"),
        ("model.embedding_dim", 1 <= config.model.embedding_dim <= 65_536, "between 1 and 65,536"),
        ("model.units", 1 <= config.model.units <= 65_536, "between 1 and 65,536"),
        ("model.layers", 1 <= config.model.layers <= 64, "between 1 and 64"),
        ("model.dropout", 0.0 <= config.model.dropout < 1.0, "in [0, 1)"),
        ("model.recurrent_dropout", 0.0 <= config.model.recurrent_dropout < 1.0, "in [0, 1)"),
        ("model.embedding_dropout", 0.0 <= config.model.embedding_dropout < 1.0, "in [0, 1)"),
        ("model.sampled_candidates", 1 <= config.model.sampled_candidates <= 10_000_000, "between 1 and 10,000,000, and below the vocabulary's size"),
        ("train.epochs", 1 <= config.train.epochs <= 1_000_000, "between 1 and 1,000,000"),
        ("train.learning_rate", 0.0 < config.train.learning_rate < math.inf, "above 0 and finite"),
        ("train.clipnorm", 0.0 <= config.train.clipnorm < math.inf, "0 (off) or above, and finite"),
        ("train.seed", 0 <= config.train.seed < 2**31, "between 0 and 2,147,483,647"),
        ("train.early_stopping_patience", config.train.early_stopping_patience >= 0, "0 (off) or above"),
        ("train.reduce_lr_patience", config.train.reduce_lr_patience >= 0, "0 (off) or above"),
        ("train.sample_length", 0 <= config.train.sample_length <= 100_000, "between 0 (off) and 100,000"),
        ("train.sample_temperature", 0.0 < config.train.sample_temperature < math.inf, "above 0 and finite"),
        ("train.backup_every_steps", config.train.backup_every_steps >= 0, "0 (epoch ends only) or above"),
        ("train.steps_per_epoch", config.train.steps_per_epoch >= 0, "0 (one pass over the text) or above"),
    ]
    for key, ok, expected in checks:
        if not ok:
            raise RnnlmError(f"{key} = {_get(config, key)!r} is out of range; it must be {expected}")
    if not config.name or "/" in config.name or config.name.startswith("."):
        raise RnnlmError(f"name = {config.name!r} cannot name a run folder; use letters, digits, '-' or '_'")
    if config.model.tie_embeddings and config.model.embedding_dim != config.model.units:
        raise RnnlmError(
            f"model.tie_embeddings needs model.embedding_dim ({config.model.embedding_dim}) equal to model.units "
            f"({config.model.units}), as the output layer reuses the embedding matrix; set both to the same size"
        )
    if config.data.mode == "bptt" and config.corpus.sequences == "lines":
        raise RnnlmError(
            'data.mode = "bptt" reads the text as one running stream, and corpus.sequences = "lines" makes every '
            'line its own sequence; use data.mode = "windows" for a list of names'
        )


def _build(cls, values: dict, prefix: str):
    if not isinstance(values, dict):
        raise RnnlmError(f"{prefix.rstrip('.')} must be a section (a [table]), not a value")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise RnnlmError(unknown_key_message(prefix + key, [prefix + name for name in fields]))
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = _build(kind, value, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(prefix + key, value, kind)
    return cls(**kwargs)


def _coerce(key: str, value, kind):
    if typing.get_origin(kind) is tuple:  # tuple[str, ...]
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
        raise RnnlmError(f"{key} must be a list of strings, got {value!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise RnnlmError(f"{key} must be {_type_name(kind)}, got {value!r} ({_type_name(type(value))})")
    return value


def _type_name(kind) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(kind, kind.__name__)


def unknown_key_message(key: str, valid: list[str]) -> str:
    """"unknown config key KEY", with the nearest key of the whole config (or else of
    ``valid``, the keys where it was found) as a "did you mean" hint."""
    every_key = config_keys()
    nearest = difflib.get_close_matches(key, every_key, n=1, cutoff=0.5) or difflib.get_close_matches(
        key, valid, n=1, cutoff=0.0
    )
    hint = f"; did you mean {nearest[0]}?" if nearest else ""
    return f"unknown config key {key}{hint}"


def config_keys() -> list[str]:
    keys = []
    for f in dataclasses.fields(Config):
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            keys.extend(f"{f.name}.{g.name}" for g in dataclasses.fields(f.default_factory))
        else:
            keys.append(f.name)
    return keys


def _get(config: Config, key: str):
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _parse_override(override: str) -> tuple[str, object]:
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RnnlmError(f"override {override!r} is not of the form section.key=value, e.g. model.units=512")
    try:
        return key, tomllib.loads(f"value = {text.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        return key, text.strip()  # A bare word such as corpus.level=char is a string.


def toml_value(value) -> str:
    """``value`` (a bool, number, string or list of them) written as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
