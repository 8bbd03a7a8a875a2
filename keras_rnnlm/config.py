"""The typed configuration of a run: frozen dataclasses loaded from TOML.

The dataclasses below are the single source of truth for every setting: its type, its
default, and (the comment above it) what it means. :data:`RANGES` and :data:`CHOICES`
say which values each key takes. ``configs/default.toml`` is generated from them
(``python -m keras_rnnlm.config`` prints it; a test holds the two equal). A config file
or a ``--set`` override with an unknown key or a value of the wrong type raises
:class:`RnnlmError` naming the key (and the nearest valid key, for a typo).

Example:
    >>> config = load_config("configs/tiny.toml", overrides=["model.units=64"])
    >>> config.model.units
    64
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.files import check_name, not_a_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class CorpusConfig:
    """Where the text comes from and how it is cut into tokens."""

    # Text files or folders of .txt files; [] = the built-in corpus.
    paths: tuple[str, ...] = ()
    # The built-in corpus used when `paths` is empty: "kjv-poetry" (Psalms to the Song of
    # Solomon, 80k tokens) or "kjv" (the whole King James Bible, 950k).
    builtin: str = "kjv-poetry"
    # Separate validation files; [] = hold out part of the corpus (`valid_fraction`).
    valid_paths: tuple[str, ...] = ()
    # Share held out for validation: the end of each file ("stream"), or random lines ("lines").
    valid_fraction: float = 0.1
    # "stream": one running text, windows cross lines (lyrics, prose); "lines": every line is
    # its own sequence, started from padding and ended by its line break (names, sentences).
    sequences: str = "stream"
    # "word": words, punctuation and line breaks are tokens; "char": every character is.
    level: str = "word"
    # Word level: "punctuation" splits punctuation off words (blood, -> blood ,);
    # "whitespace" trusts text that is already tokenized (WikiText).
    split: str = "punctuation"
    # Lower-case the text before tokenizing.
    lowercase: bool = True


@dataclass(frozen=True)
class VocabConfig:
    """Which tokens get their own id; the rest become <unk>."""

    # Most tokens kept, the three reserved ones (<pad> <unk> <eol>) included.
    max_size: int = 10_000
    # Tokens seen fewer times than this become <unk>.
    min_count: int = 1
    # A fine-tune (train.init_from): add the new text's words to the vocabulary of the
    # model started from (up to max_size); false keeps it as it is, new words read as <unk>.
    extend: bool = True


# data.batch_size when a config leaves it at 0: per mode. With 256 lanes a 300k-token
# corpus gets 34 bptt steps an epoch and learns less in 15 epochs than 32 lanes do in 8
# (issue 27); 256 windows a step keep the windows model's speed.
DEFAULT_BATCH_SIZES = {"windows": 256, "bptt": 32}


@dataclass(frozen=True)
class DataConfig:
    """How the token stream becomes training examples."""

    # "windows": every example is `window_size` tokens and the one target after them.
    # "bptt": truncated backpropagation through time: `batch_size` lanes read the text in
    # order, `bptt_steps` tokens a step, a target at every token, the recurrent state
    # carried from step to step (long context; docs/long-context.md).
    mode: str = "windows"
    # Windows mode: tokens of context in each example (characters at character level: a
    # character model sets its own, larger window, e.g. 16 in configs/names.toml).
    window_size: int = 5
    # Bptt mode: tokens each lane reads per step; the gradient stops at the step's start.
    bptt_steps: int = 35
    # Windows per training step, or lanes in bptt mode; 0 = the mode's default
    # (256 windows, 32 lanes).
    batch_size: int = 0

    def __post_init__(self):
        if self.batch_size == 0:  # resolved here, so every reader sees the number the run uses
            object.__setattr__(self, "batch_size", DEFAULT_BATCH_SIZES.get(self.mode, 0))


@dataclass(frozen=True)
class ModelConfig:
    """The Embedding -> recurrent layers -> Dense softmax network."""

    # Recurrent cell: "lstm", "gru" or "simple_rnn" (a vanilla RNN, for comparison).
    cell: str = "lstm"
    # Size of each token's embedding vector.
    embedding_dim: int = 128
    # Units in each recurrent layer.
    units: int = 256
    # Stacked recurrent layers.
    layers: int = 1
    # Dropout after each recurrent layer.
    dropout: float = 0.2
    # Dropout on the recurrent state; above 0 a GPU loses the fused cuDNN kernel (a warning says so).
    recurrent_dropout: float = 0.0
    # Dropout on the token vectors, as the PyTorch word-language-model example.
    embedding_dropout: float = 0.0
    # The dropout layers (model.dropout, model.embedding_dropout) draw one mask a sequence,
    # the same at every position (locked or variational dropout, as AWD-LSTM), instead of
    # one a token. Matters for sequences: bptt mode, and between stacked layers.
    locked_dropout: bool = False
    # Training only: the share of each LSTM's hidden-to-hidden weights dropped, one mask a
    # step (DropConnect, AWD-LSTM's weight drop; it used 0.5). 0 = off. LSTM cells only.
    weight_dropout: float = 0.0
    # Training only: the share of word types dropped a step, every occurrence of a dropped
    # word reading zeros (AWD-LSTM's embedding dropout; it used 0.1). 0 = off.
    word_dropout: float = 0.0
    # Training only: adds this times the mean square of the top layer's output (after its
    # dropout) to the loss (AR; AWD-LSTM used 2). 0 = off.
    activation_regularization: float = 0.0
    # Training only: adds this times the mean square of the top layer's change from one
    # token to the next (before its dropout) to the loss (TAR; AWD-LSTM used 1). 0 = off.
    temporal_activation_regularization: float = 0.0
    # A stock LayerNormalization after each recurrent layer (before its dropout): between
    # stacked layers and before the output layer (Ba et al. 2016). Generation then steps
    # through Keras' cells, not the fused LSTM step.
    layer_norm: bool = False
    # Bptt mode: one causal attention block after the last recurrent layer (stock
    # MultiHeadAttention, dropout model.dropout, a residual add), reading the step's
    # outputs and a memory of the last attention_memory outputs before them, carried from
    # step to step with the gradient stopped (keras_rnnlm/attention.py).
    attention: bool = False
    # Heads of the attention block; model.units must divide among them.
    attention_heads: int = 1
    # Outputs each lane remembers for the attention block (generation remembers as many).
    attention_memory: int = 512

    @property
    def memory(self) -> int:
        """Outputs the attention block remembers per lane; 0 without attention."""
        return self.attention_memory if self.attention else 0
    # The output layer uses the embedding matrix (transposed) as its kernel (Press & Wolf
    # 2017): fewer parameters, usually better perplexity. Needs embedding_dim == units.
    tie_embeddings: bool = False
    # "full": every training step computes the softmax over the whole vocabulary;
    # "sampled": over the targets and `sampled_candidates` tokens drawn from a Zipf
    # distribution (much faster for a large vocabulary; docs/large-vocabularies.md).
    # Validation, evaluation, generation and export always use the full softmax.
    softmax: str = "full"
    # Sampled softmax: tokens drawn each step, fewer than the vocabulary.
    sampled_candidates: int = 1024


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation loop, its callbacks and where it runs."""

    # Most epochs; early stopping may end sooner.
    epochs: int = 20
    # Training steps in an epoch (validation, the checkpoint, the sample and the backup
    # come at its end); 0 = one pass over the training text. A large corpus sets it so that
    # a model is judged and saved every hour or so; the next epoch reads on from there.
    steps_per_epoch: int = 0
    # "adam" or "sgd".
    optimizer: str = "adam"
    # Step size of the optimizer (typical: 1e-3 for adam, 1 to 20 for sgd).
    learning_rate: float = 0.001
    # Clip gradients to this global norm; 0 = off.
    clipnorm: float = 1.0
    # Stop after this many epochs without a better validation loss; 0 = off.
    early_stopping_patience: int = 3
    # Halve the learning rate after this many epochs without a better validation loss; 0 = off.
    reduce_lr_patience: int = 0
    # Raise the learning rate linearly from near 0 over the first this many steps (a
    # warm-up, as transformers are trained with Adam); 0 = off.
    warmup_steps: int = 0
    # Validate, save and sample with an exponential moving average of the weights (Polyak
    # averaging, as AWD-LSTM's averaged SGD); this is its momentum per step (0.999 averages
    # about the last 1,000 steps); 0 = off. Training goes on from the raw weights.
    weight_averaging: float = 0.0
    # Stop after the first epoch that ends this many minutes after training started (in
    # this invocation); 0 = off. A fixed budget ("train for an hour"), and comparisons at
    # equal wall time (benchmarks/regularization.py).
    max_minutes: float = 0.0
    # Seeds Python, NumPy and TensorFlow: the same seed and config give the same run.
    seed: int = 1234
    # "auto" (every GPU if any, else the CPU), "cpu" or "gpu".
    device: str = "auto"
    # "auto", "float32" or "mixed" (float16 on a GPU, bfloat16 on a CPU; the softmax stays
    # float32). "auto" is mixed on a GPU of compute capability 7.0 or newer and on a CPU
    # whose bfloat16 matmul measures at least 1.3x float32 at start-up, else float32.
    precision: str = "auto"
    # Prompt of the sample printed after each epoch; "" = the start of the validation text.
    sample_prompt: str = ""
    # Tokens in that sample; 0 = no sample.
    sample_length: int = 30
    # Temperature of that sample: lower is safer, higher is more varied.
    sample_temperature: float = 0.8
    # Write TensorBoard logs to <run>/logs.
    tensorboard: bool = True
    # Also back up every this many steps inside an epoch, so that a killed long epoch
    # resumes at that step; 0 = at epoch ends only.
    backup_every_steps: int = 0
    # Bptt mode: when the run ends, fit a continuous cache's settings on the validation
    # text (<run>/cache.json) for `evaluate --cache` (docs/evaluating.md).
    fit_cache: bool = True
    # A trained run folder to start from (a fine-tune, docs/fine-tuning.md): its weights,
    # its tokenization and architecture (FINE_TUNE_INHERITED), its vocabulary extended by
    # the new text's words. "" = start from random weights.
    init_from: str = ""


@dataclass(frozen=True)
class Config:
    """Everything that defines a run."""

    # Name of the run: its folder is saved_models/<name> (--run-name overrides it).
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


# The values each key takes, beyond its type. Upper bounds keep a typo from asking for
# more memory than any machine has.
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
RANGES = {
    "corpus.valid_fraction": (lambda value: 0.0 < value < 1.0, "between 0 and 1 (exclusive)"),
    "vocab.max_size": (lambda value: 4 <= value <= 10_000_000, "between 4 (three reserved tokens and one word) and 10,000,000"),
    "vocab.min_count": (lambda value: value >= 1, "at least 1"),
    "data.window_size": (lambda value: 1 <= value <= 10_000, 'between 1 and 10,000 (longer context: data.mode = "bptt")'),
    "data.bptt_steps": (lambda value: 1 <= value <= 10_000, "between 1 and 10,000"),
    "data.batch_size": (lambda value: 0 <= value <= 1_000_000, "0 (the mode's default) or between 1 and 1,000,000"),
    "model.embedding_dim": (lambda value: 1 <= value <= 65_536, "between 1 and 65,536"),
    "model.units": (lambda value: 1 <= value <= 65_536, "between 1 and 65,536"),
    "model.layers": (lambda value: 1 <= value <= 64, "between 1 and 64"),
    "model.dropout": (lambda value: 0.0 <= value < 1.0, "in [0, 1)"),
    "model.recurrent_dropout": (lambda value: 0.0 <= value < 1.0, "in [0, 1)"),
    "model.embedding_dropout": (lambda value: 0.0 <= value < 1.0, "in [0, 1)"),
    "model.weight_dropout": (lambda value: 0.0 <= value < 1.0, "in [0, 1)"),
    "model.word_dropout": (lambda value: 0.0 <= value < 1.0, "in [0, 1)"),
    "model.activation_regularization": (lambda value: 0.0 <= value < math.inf, "0 (off) or above, and finite"),
    "model.temporal_activation_regularization": (lambda value: 0.0 <= value < math.inf, "0 (off) or above, and finite"),
    "model.attention_heads": (lambda value: 1 <= value <= 64, "between 1 and 64"),
    "model.attention_memory": (lambda value: 1 <= value <= 100_000, "between 1 and 100,000"),
    "model.sampled_candidates": (lambda value: 1 <= value <= 10_000_000, "between 1 and 10,000,000, and below the vocabulary's size"),
    "train.epochs": (lambda value: 1 <= value <= 1_000_000, "between 1 and 1,000,000"),
    "train.steps_per_epoch": (lambda value: value >= 0, "0 (one pass over the text) or above"),
    "train.learning_rate": (lambda value: 0.0 < value < math.inf, "above 0 and finite"),
    "train.clipnorm": (lambda value: 0.0 <= value < math.inf, "0 (off) or above, and finite"),
    "train.early_stopping_patience": (lambda value: value >= 0, "0 (off) or above"),
    "train.reduce_lr_patience": (lambda value: value >= 0, "0 (off) or above"),
    "train.warmup_steps": (lambda value: value >= 0, "0 (off) or above"),
    "train.weight_averaging": (lambda value: 0.0 <= value < 1.0, "0 (off) or in (0, 1), e.g. 0.999"),
    "train.max_minutes": (lambda value: 0.0 <= value < math.inf, "0 (off) or above, and finite"),
    "train.seed": (lambda value: 0 <= value < 2**31, "between 0 and 2,147,483,647"),
    "train.sample_length": (lambda value: 0 <= value <= 100_000, "between 0 (off) and 100,000"),
    "train.sample_temperature": (lambda value: 0.0 < value < math.inf, "above 0 and finite"),
    "train.backup_every_steps": (lambda value: value >= 0, "0 (epoch ends only) or above"),
}


# The file a run folder keeps its config in.
RUN_CONFIG = "config.toml"

# A fine-tune (train.init_from) reads text as the model it starts from read it and keeps
# its architecture: these keys come from that run, and a config or --set that gives them
# another value is refused. Every other key is the fine-tune's own: the learning rate,
# the dropouts and regularization, epochs, batch size, the softmax, the time budget.
FINE_TUNE_INHERITED = (
    "corpus.level", "corpus.split", "corpus.lowercase", "corpus.sequences",
    "data.mode", "data.window_size", "data.bptt_steps",
    "model.cell", "model.embedding_dim", "model.units", "model.layers", "model.tie_embeddings", "model.layer_norm",
    "model.attention", "model.attention_heads", "model.attention_memory",
)
# Taken from that run unless given: how large the extended vocabulary may grow, the
# regularization, the lanes, the optimizer and its step size. Measured on the sonnets
# from a WikiText-2 run (benchmarks/fine_tune.py): a tenth or three tenths of the run's
# step size fine-tuned worse on three pairs, within 0.002 nats/char on the fourth; the
# run's sampled softmax is not taken (the
# full softmax, 204 against 246: on a small text the steps are few, and each must push
# down every word the text does not use), nor its weight averaging (over a few hundred
# steps its 0.999 kept the saved weights near the start: 445 against 246).
FINE_TUNE_DEFAULTS = (
    "vocab.max_size", "vocab.min_count", "data.batch_size",
    "model.dropout", "model.recurrent_dropout", "model.embedding_dropout", "model.locked_dropout", "model.weight_dropout",
    "model.word_dropout", "model.activation_regularization", "model.temporal_activation_regularization",
    "train.optimizer", "train.learning_rate", "train.clipnorm",
)


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
    if init_from := values.get("train", {}).get("init_from") if isinstance(values.get("train"), dict) else None:
        if not (Path(init_from) / RUN_CONFIG).is_file():
            raise RnnlmError(f"train.init_from = {init_from} is not a run folder (it has no {RUN_CONFIG}); "
                             "pass a trained run, such as saved_models/psalms")
        values = fine_tune_values(values, read_toml(Path(init_from) / RUN_CONFIG), init_from)
    return config_from_dict(values)


def fine_tune_values(values: dict, started_from: dict, run: str) -> dict:
    """``values`` (a config's tables, as given) for a fine-tune of the run whose config is
    ``started_from``: its :data:`FINE_TUNE_INHERITED` keys set from that run's, its
    :data:`FINE_TUNE_DEFAULTS` too where not given.

    Raises:
        RnnlmError: A key of FINE_TUNE_INHERITED given another value than the run's.
    """
    values = {section: dict(table) if isinstance(table, dict) else table for section, table in values.items()}
    for key in (*FINE_TUNE_INHERITED, *FINE_TUNE_DEFAULTS):
        section, name = key.split(".")
        if name not in started_from.get(section, {}):
            continue  # a run of an earlier version: the key's default
        kept = started_from[section][name]
        table = values.setdefault(section, {})
        if key in FINE_TUNE_INHERITED and name in table and table[name] != kept:
            raise RnnlmError(
                f"{key} = {table[name]!r} contradicts the model train.init_from starts from ({run}: {kept!r}); a fine-tune "
                "reads text as that model did and keeps its architecture: leave the key out"
            )
        table.setdefault(name, kept)
    return values


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
        raise RnnlmError(f"{what} {path} {not_a_file(path)}; pass a path such as {example}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise RnnlmError(f"cannot read {what} {path} ({error.strerror}); check that it is a file you may read") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise RnnlmError(f"{what} {path} is not valid TOML ({error}); fix the line it names") from None
    except RecursionError:
        raise RnnlmError(f"{what} {path} nests arrays or tables too deeply to read; a config needs no nesting") from None


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
    """Checks every key's value (:func:`check_value`), then the values that must go together.

    Raises:
        RnnlmError: Naming the first value out of range and the range it must lie in, or
            the first two values that do not go together.
    """
    for key in config_keys():
        check_value(key, _get(config, key))
    if config.model.tie_embeddings and config.model.embedding_dim != config.model.units:
        raise RnnlmError(
            f"model.tie_embeddings needs model.embedding_dim ({config.model.embedding_dim}) equal to model.units "
            f"({config.model.units}), as the output layer reuses the embedding matrix; set both to the same size"
        )
    if config.model.weight_dropout and config.model.cell != "lstm":
        raise RnnlmError(
            f'model.weight_dropout drops an LSTM\'s hidden-to-hidden weights, and model.cell = "{config.model.cell}"; '
            'set model.cell = "lstm", or model.weight_dropout = 0'
        )
    if config.model.temporal_activation_regularization and config.data.mode != "bptt":
        raise RnnlmError(
            "model.temporal_activation_regularization penalizes the top layer's change from one token to the next, "
            'and in data.mode = "windows" the top layer gives one output a window; use data.mode = "bptt", or set it to 0'
        )
    if config.model.attention and config.data.mode != "bptt":
        raise RnnlmError(
            "model.attention reads a memory of the outputs before each step, which only a text read in order "
            'has; use data.mode = "bptt", or model.attention = false'
        )
    if config.model.attention and config.model.units % config.model.attention_heads:
        raise RnnlmError(
            f"model.units = {config.model.units} does not divide among model.attention_heads = "
            f"{config.model.attention_heads}; choose a number of heads that divides it"
        )
    if config.data.mode == "bptt" and config.corpus.sequences == "lines":
        raise RnnlmError(
            'data.mode = "bptt" reads the text as one running stream, and corpus.sequences = "lines" makes every '
            'line its own sequence; use data.mode = "windows" for a list of names'
        )


def check_value(key: str, value) -> None:
    """Checks one key's value of the right type against its :data:`CHOICES` or
    :data:`RANGES`, whatever the other keys hold.

    Raises:
        RnnlmError: Naming the key, the value and what it must be.
    """
    if key in CHOICES and value not in CHOICES[key]:
        raise RnnlmError(f"{key} = {value!r} is not one of {', '.join(map(repr, CHOICES[key]))}")
    if key in RANGES and not RANGES[key][0](value):
        raise RnnlmError(f"{key} = {value!r} is out of range; it must be {RANGES[key][1]}")
    if key == "name":
        check_name(value, "the run name")


def key_type(key: str) -> type:
    """The type of a config key's value (int, float, bool, str, or tuple[str, ...])."""
    section, _, name = key.rpartition(".")
    owner = typing.get_type_hints(Config)[section] if section else Config
    return typing.get_type_hints(owner)[name]


def checked_value(key: str, value):
    """``value`` as config key ``key`` holds it (an integer read as a float where a float
    goes), checked alone (:func:`check_value`).

    Raises:
        RnnlmError: An unknown key, a value of the wrong type or out of range.
    """
    if key not in config_keys():
        raise RnnlmError(unknown_key_message(key, config_keys()))
    value = _coerce(key, value, key_type(key))
    check_value(key, value)
    return value


def reference_toml() -> str:
    """Every key with its default and its meaning (the comment above its field), as TOML:
    the text of ``configs/default.toml``."""
    lines = [
        "# Every setting of keras_rnnlm with its default and what it means: the built-in run (KJV",
        "# Psalms to the Song of Solomon, word level). Generated from keras_rnnlm/config.py by",
        "# python -m keras_rnnlm.config. Copy it to start your own config: a key left out keeps its",
        "# default. Override one value with --set section.key=value.",
    ]
    defaults = config_to_dict(Config())
    for section in [None, *(f.name for f in dataclasses.fields(Config) if dataclasses.is_dataclass(f.default_factory))]:
        owner = Config if section is None else typing.get_type_hints(Config)[section]
        comments = _field_comments(owner)
        if section is not None:
            lines += ["", f"[{section}]"]
        declared = {f.name: f.default for f in dataclasses.fields(owner)}  # before __post_init__ resolves a 0
        for name, comment in comments.items():
            value = declared[name] if isinstance(declared[name], (bool, int, float, str)) else (
                defaults[name] if section is None else defaults[section][name])
            lines += ["", *(f"# {line}" for line in comment), f"{name} = {toml_value(value)}"]
    return "\n".join(lines) + "\n"


def _field_comments(cls) -> dict[str, list[str]]:
    """The comment lines above each field of a config dataclass, by field name (fields
    that are sections left out)."""
    comments, pending = {}, []
    for line in inspect.getsource(cls).splitlines():
        line = line.strip()
        if line.startswith("#"):
            pending.append(line[1:].strip())
        elif match := re.match(r"(\w+): [^=]+ = (?!field\()", line):
            comments[match.group(1)] = pending
            pending = []
        else:
            pending = []
    return comments


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
    except RecursionError:
        raise RnnlmError(f"override {key} nests arrays or tables too deeply to read; give a plain value") from None


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


if __name__ == "__main__":  # python -m keras_rnnlm.config: every key, its default and its meaning
    print(reference_toml(), end="")
