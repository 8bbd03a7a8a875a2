"""The command line of every command: its parser, and the checks that need no TensorFlow.

``python -m keras_rnnlm.<command>`` runs :func:`keras_rnnlm.cli.main`, which calls the
command's function here and, only if it returns, imports the command's module and calls
its ``main`` with what was checked. So a mistake (an argument, the config, a path, the
corpus' first bytes, the run folder) costs a fraction of a second and one line, not
TensorFlow's start-up. This module imports no module that imports TensorFlow, and none
that imports it.

Example:
    python -m keras_rnnlm.train --corpus lyrics.txt --run-name lyrics
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import socket
from pathlib import Path

from keras_rnnlm.config import Config, load_config
from keras_rnnlm.corpus import check_readable, corpus_documents, find_documents
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.files import Owned, check_folder_path, check_name
from keras_rnnlm.multiworker import Cluster
from keras_rnnlm.runs import CacheSettings, DynamicSettings, RunFolder, latest_run
from keras_rnnlm.sampling import DEFAULT_TOP_K, DEFAULT_TOP_P, STRATEGIES, Sampling, check_generation
from keras_rnnlm.search_space import read_search
from keras_rnnlm.shards import PreparedCorpus, is_prepared, prepared_corpus_path
from keras_rnnlm.splits import check_text_sizes, text_sizes
from keras_rnnlm.vocab import Vocabulary

MAX_SAMPLES = 1_000  # texts one generate command writes at once: more is almost surely a typo
RUN_FOLDER = "run folder, e.g. saved_models/psalms"
LATEST_RUN = "run folder (default: the most recent run in saved_models/)"
VERBOSE_HELP = "also show TensorFlow's own start-up and device notices (or set KERAS_RNNLM_VERBOSE=1)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose mistakes are one line (argparse prints the usage first),
    and which refuses a NUL character in any argument (no path or text can hold one)."""

    def error(self, message):
        raise RnnlmError(f"{message}; see {self.prog} --help")

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        for action in self._actions:
            values = getattr(parsed, action.dest, None)
            for value in values if isinstance(values, list) else [values]:
                if isinstance(value, str) and "\0" in value:
                    flag = action.option_strings[0] if action.option_strings else action.dest
                    raise RnnlmError(f"{flag} holds a NUL character ({value!r}); give it without one")
        return parsed


def _parser(command: str, description: str, model: str | None = None, verbose: bool = True) -> ArgumentParser:
    """A command's parser, with ``--verbose`` (for the commands that load TensorFlow) and,
    given its help, ``--model`` (a run folder; required unless ``model`` is
    :data:`LATEST_RUN`'s help)."""
    parser = ArgumentParser(prog=f"python -m keras_rnnlm.{command}", description=description)
    if model:
        parser.add_argument("--model", required=model != LATEST_RUN, help=model)
    if verbose:
        parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    return parser


def _config_arguments(parser: ArgumentParser, corpus_help: str = "text files or folders of .txt files (default: built-in corpus)") -> None:
    """The arguments that make a config: a file, overrides, the corpus."""
    parser.add_argument("--config", dest="config_file", help="TOML config (default: the built-in defaults, as in configs/default.toml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set model.units=512 (repeatable)")
    parser.add_argument("--corpus", nargs="+", metavar="PATH", help=corpus_help)
    parser.add_argument("--valid", nargs="+", metavar="PATH", help="separate validation files (default: the end of each corpus file)")


def train_parser() -> ArgumentParser:
    parser = _parser("train", "Train a word- or character-level LSTM language model on your text.")
    _config_arguments(parser)
    parser.add_argument("--data", metavar="DIR", help="a corpus prepared by python -m keras_rnnlm.prepare (instead of --corpus)")
    parser.add_argument("--run-name", help="run folder name (default: the config's name)")
    parser.add_argument("--output-dir", default="saved_models", help="where run folders go (default: saved_models)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), help="where to train (default: auto)")
    parser.add_argument("--seed", type=int, help="random seed (default: from the config)")
    parser.add_argument("--epochs", type=int, help="most epochs (default: from the config)")
    parser.add_argument("--export", nargs="?", const="", metavar="DIR",
                        help="then export a TensorFlow SavedModel to DIR (default DIR: <run folder>/saved_model)")
    parser.add_argument("--init-from", metavar="RUN",
                        help="start from a trained run's weights: a fine-tune on your text (docs/fine-tuning.md)")
    parser.add_argument("--keep-vocabulary", action="store_true",
                        help="with --init-from: read words the run does not know as <unk> instead of adding them")
    return parser


def train(argv: list[str] | None = None) -> argparse.Namespace:
    """The train command's arguments, with ``config`` (the :class:`Config`), ``run_dir``
    and ``cluster`` added, checked: the corpus' first bytes (or a prepared corpus'
    settings and file sizes), the run folder, the export folder and ``TF_CONFIG``.

    Raises:
        RnnlmError: The first mistake found.
    """
    args = train_parser().parse_args(argv)
    args.config = config_from_args(args)
    check_folder_path(args.output_dir, "--output-dir")
    args.run_dir = Path(args.output_dir) / args.config.name
    args.cluster = Cluster.from_environment()
    if prepared := prepared_corpus_path(args.config):
        corpus = PreparedCorpus(prepared)
        corpus.check_settings(args.config)
        corpus.check_files(checksums=False)  # training compares the checksums too
    else:
        check_corpus_text(args.config)
    if args.cluster.workers:
        args.config.check_replicas(len(args.cluster.workers), len(args.cluster.workers))
    if args.keep_vocabulary and not args.config.train.init_from:
        raise RnnlmError("--keep-vocabulary keeps the vocabulary of the run --init-from starts from; pass --init-from RUN too")
    if args.config.train.init_from:
        check_trained(RunFolder(args.config.train.init_from))
        if Path(args.config.train.init_from).resolve() == args.run_dir.resolve():
            raise RnnlmError(f"--init-from {args.config.train.init_from} is the run folder this run trains into; "
                             "give the fine-tune its own with --run-name")
    RunFolder(args.run_dir).state(args.config, args.overwrite)  # refuses a folder that holds something else
    if args.export:
        check_export_folder(Path(args.export), "--export")
    return args


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file, then ``--set`` overrides, then the dedicated flags and paths."""
    overrides = list(args.set)
    if getattr(args, "keep_vocabulary", False):
        overrides.append("vocab.extend=false")
    for flag, key in (("device", "train.device"), ("seed", "train.seed"), ("epochs", "train.epochs"), ("run_name", "name"),
                      ("init_from", "train.init_from")):
        value = getattr(args, flag, None)  # prepare has no --device, --epochs or --run-name
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")  # A JSON string or integer is valid TOML.
    config = load_config(args.config_file, overrides)
    corpus = config.corpus
    if getattr(args, "data", None):
        if args.corpus:
            raise RnnlmError("pass either --data (a prepared corpus) or --corpus (text), not both")
        if not is_prepared(args.data):
            raise RnnlmError(f"{args.data} is not a prepared corpus (no manifest.json); prepare it with python -m keras_rnnlm.prepare --out {args.data}")
        corpus = dataclasses.replace(corpus, paths=(args.data,))
    if args.corpus:
        corpus = dataclasses.replace(corpus, paths=tuple(args.corpus))
    if args.valid:
        corpus = dataclasses.replace(corpus, valid_paths=tuple(args.valid))
    return dataclasses.replace(config, corpus=corpus)


def prepare(argv: list[str] | None = None) -> argparse.Namespace:
    """The prepare command's arguments, with ``config`` added, checked.

    Raises:
        RnnlmError: The first mistake found.
    """
    parser = _parser("prepare", "Tokenize a corpus once into token shards that training reads from disk as it goes (train --data DIR).",
                     verbose=False)
    parser.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    _config_arguments(parser)
    parser.add_argument("--seed", type=int, help="train.seed: chooses the held-out lines in line mode (default: from the config)")
    parser.add_argument("--overwrite", action="store_true", help="replace a corpus prepared in --out from other text or settings")
    parser.add_argument("--shard-tokens", type=int, default=None, metavar="N", help="ids per shard file (default: 67,108,864)")
    args = parser.parse_args(argv)
    args.config = config_from_args(args)
    if args.shard_tokens is not None and not 1 <= args.shard_tokens <= 1 << 40:
        raise RnnlmError(f"--shard-tokens must be between 1 and {1 << 40:,}, got {args.shard_tokens}")
    if prepared_corpus_path(args.config):
        raise RnnlmError("--corpus names a prepared corpus; give the text files it was prepared from")
    check_folder_path(args.out, "--out")
    Owned(args.out, "prepared corpus").check("choose another --out")
    check_corpus_text(args.config, sizes=False)  # what trains from it (a window, lanes) is train's to check
    return args


def launch(argv: list[str] | None = None) -> argparse.Namespace:
    """The launch command's arguments, checked: the workers' train arguments too, so a
    mistake is one line, before any worker starts.

    Raises:
        RnnlmError: The first mistake found.
    """
    parser = _parser("launch", "Train one model with several worker processes on this machine (MultiWorkerMirroredStrategy on loopback).",
                     verbose=False)
    parser.add_argument("--workers", type=int, required=True, help="how many worker processes (2 or more, at most one a core)")
    parser.add_argument("--oversubscribe", action="store_true", help="allow more workers than the machine has cores")
    parser.add_argument("train_arguments", nargs="*", metavar="-- TRAIN ARGUMENTS", help="arguments of python -m keras_rnnlm.train")
    args = parser.parse_args(argv)
    if args.workers < 2:
        raise RnnlmError(f"--workers must be at least 2, got {args.workers}; one process is python -m keras_rnnlm.train")
    cores = os.cpu_count() or 1
    if args.workers > cores and not args.oversubscribe:
        raise RnnlmError(f"--workers {args.workers} is more than this machine's {cores} cores (each worker is a whole "
                         "TensorFlow process); give at most that many, or pass --oversubscribe to start them anyway")
    if args.workers > 256:
        raise RnnlmError(f"--workers {args.workers} is more than 256, the most one launch starts on one machine")
    checked = train(args.train_arguments)
    checked.config.check_replicas(args.workers, args.workers)
    return args


def tune(argv: list[str] | None = None) -> argparse.Namespace:
    """The tune command's arguments, with ``config``, ``space`` (the searched keys) and
    ``folder`` added, checked; KerasTuner must be installed.

    Raises:
        RnnlmError: The first mistake found.
    """
    parser = _parser("tune", "Search config values with KerasTuner: each trial trains as train does; the best config and model are kept.")
    parser.add_argument("--search", required=True, metavar="SEARCH.toml", help="config keys and their ranges, e.g. configs/search/default.toml")
    _config_arguments(parser)
    parser.add_argument("--max-trials", type=int, default=20, help="trials in all, earlier runs of the search included (default: 20)")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="minutes in all, earlier runs included (default: 30)")
    parser.add_argument("--strategy", choices=("bayesian", "random", "hyperband"), default="bayesian",
                        help="KerasTuner's oracle (default: bayesian)")
    parser.add_argument("--run-name", dest="tune_name", help="tuning folder name (default: the config's name and _tune)")
    parser.add_argument("--output-dir", default="saved_models", help="where the tuning folder goes (default: saved_models)")
    parser.add_argument("--overwrite", action="store_true", help="start the search again, deleting the folder's trials")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), help="where to train (default: auto)")
    parser.add_argument("--seed", type=int, help="seeds the search and every trial (default: from the config)")
    args = parser.parse_args(argv)
    needed = {"keras_tuner": "keras-tuner", **({"sklearn": "scikit-learn", "scipy": "scipy"} if args.strategy == "bayesian" else {})}
    missing = [package for module, package in needed.items() if importlib.util.find_spec(module) is None]
    if missing:
        which = "which is not installed; install it" if len(missing) == 1 else "which are not installed; install them"
        names = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]}"
        raise RnnlmError(f"tuning needs {names}, {which} with pip install \".[tune]\"")
    if args.max_trials < 1:
        raise RnnlmError(f"--max-trials must be at least 1, got {args.max_trials}")
    if not 0 < args.max_minutes < 10**7:
        raise RnnlmError(f"--max-minutes must be above 0, got {args.max_minutes:g}")
    args.config = config_from_args(args)
    if prepared_corpus_path(args.config):
        raise RnnlmError("--corpus names a prepared corpus; give the text files (tune prepares them once for its trials)")
    check_folder_path(args.output_dir, "--output-dir")
    if args.tune_name is not None:
        check_name(args.tune_name, "--run-name")
    args.folder = Path(args.output_dir) / (args.tune_name or f"{args.config.name}_tune")
    Owned(args.folder, "search").check("choose another --run-name")
    check_corpus_text(args.config)
    args.space = read_search(args.search)
    return args


def generate_parser() -> ArgumentParser:
    parser = _parser("generate", "Write text with a trained model.", model=LATEST_RUN)
    parser.add_argument("--prompt", default="", help="text to continue (default: none, start as a file starts)")
    parser.add_argument("--words", type=int, default=50, help="tokens to generate: words and punctuation, or characters (default: 50)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="temperature", help="how to pick each token (default: temperature)")
    parser.add_argument("--temperature", type=float, default=1.0, help="above 0; lower is safer (default: 1.0)")
    parser.add_argument("--top-k", type=int, help=f"sample among the k most likely (default: all; {DEFAULT_TOP_K} with --strategy top_k)")
    parser.add_argument("--top-p", type=float, help=f"sample within probability p (default: all; {DEFAULT_TOP_P} with --strategy top_p)")
    parser.add_argument("--num-samples", type=int, default=1, help="texts to write, in one batch (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same text (default: 0)")
    parser.add_argument("--max-lines", type=int, help="stop each text after this many lines (default: 1 for a line-mode model, else no limit)")
    parser.add_argument("--interactive", action="store_true", help="read prompts from standard input, one a line")
    parser.add_argument("--cache", action="store_true",
                        help="bptt mode: mix the run's continuous cache into each token's distribution (docs/writing-text.md)")
    return parser


def generate(argv: list[str] | None = None) -> argparse.Namespace:
    """The generate command's arguments, with ``sampling`` added and ``model`` the run
    folder (the most recent run when none is given), checked.

    Raises:
        RnnlmError: The first mistake found.
    """
    args = generate_parser().parse_args(argv)
    if not 1 <= args.num_samples <= MAX_SAMPLES:
        raise RnnlmError(f"--num-samples must be between 1 and {MAX_SAMPLES:,}, got {args.num_samples:,}")
    check_text(args.prompt, "the prompt")
    check_generation(args.words, args.max_lines, args.seed)
    args.sampling = Sampling.from_strategy(args.strategy, args.temperature, args.top_k, args.top_p)
    if args.model is None:
        args.model = latest_run()
        args.latest = True
    run = RunFolder(args.model)
    config = check_trained(run)
    if args.cache and config.data.mode != "bptt":
        raise RnnlmError(f"--cache needs a bptt-mode run (it remembers the text read in order); {args.model} is a windows-mode run")
    if args.cache:
        CacheSettings.load(run.path)
    return args


def evaluate(argv: list[str] | None = None) -> argparse.Namespace:
    """The evaluate command's arguments, checked.

    Raises:
        RnnlmError: The first mistake found.
    """
    parser = _parser("evaluate", "Score a trained model on a text: perplexity and accuracy.", model=RUN_FOLDER)
    parser.add_argument("--text", required=True, nargs="+", help="text files (or folders of .txt) to score")
    parser.add_argument("--batch-size", type=int, default=256, help="windows per step, windows mode (default: 256)")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--cache", action="store_true",
                       help="bptt mode: also score with the run's fitted continuous cache (docs/evaluating.md)")
    cache.add_argument("--fit-cache", action="store_true",
                       help="bptt mode: fit the cache's settings on this (validation) text and keep them in the run folder")
    cache.add_argument("--fit-dynamic", action="store_true",
                       help="bptt mode: fit dynamic evaluation's settings on this (validation) text, a pass per setting tried, "
                            "and keep them in the run folder")
    parser.add_argument("--dynamic", action="store_true",
                        help="bptt mode: also score by dynamic evaluation, the model learning from the text as it scores it, "
                             "with the run's fitted settings (docs/evaluating.md)")
    args = parser.parse_args(argv)
    if not 1 <= args.batch_size <= 1_000_000:
        raise RnnlmError(f"--batch-size must be between 1 and 1,000,000, got {args.batch_size}")
    run = RunFolder(args.model)
    config = check_trained(run)
    if args.dynamic and (args.fit_cache or args.fit_dynamic):
        raise RnnlmError("--dynamic scores with fitted settings and a --fit-... flag fits them; give one of them at a time")
    flags = [flag for flag in ("cache", "fit_cache", "dynamic", "fit_dynamic") if getattr(args, flag)]
    if flags and config.data.mode != "bptt":
        flag = "--" + flags[0].replace("_", "-")
        raise RnnlmError(f"{flag} needs a bptt-mode run (it reads the text in order); {args.model} is a windows-mode run")
    if args.cache:
        CacheSettings.load(run.path)
    if args.dynamic:
        DynamicSettings.load(run.path)
    for fits, settings in ((args.fit_cache, CacheSettings), (args.fit_dynamic, DynamicSettings)):
        if fits:  # before the passes over the text, not after them
            Owned(run.path, "run").check_names(settings.FILE)
    check_readable(find_documents(args.text))
    return args


# export's formats, and the folder each writes in the run folder by default.
EXPORT_FORMATS = {"saved_model": "saved_model", "web": "web"}


def export(argv: list[str] | None = None) -> argparse.Namespace:
    """The export command's arguments, ``out`` the folder to write, checked.

    Raises:
        RnnlmError: The first mistake found.
    """
    parser = _parser("export", "Export a trained run: a TensorFlow SavedModel that serves text without keras_rnnlm, "
                     "or a static web page that writes with the model in the browser.", model=RUN_FOLDER)
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="saved_model",
                        help="saved_model (default): for TensorFlow and TensorFlow Serving; web: a folder of static files "
                             "(index.html, the model in JavaScript, its weights) that any web server serves")
    parser.add_argument("--out", help="folder to write (default: <run folder>/saved_model, or <run folder>/web)")
    args = parser.parse_args(argv)
    args.out = Path(args.out) if args.out else Path(args.model) / EXPORT_FORMATS[args.format]
    check_trained(RunFolder(args.model))
    check_export_folder(args.out, "--out", "web export" if args.format == "web" else "export")
    return args


def serve(argv: list[str] | None = None) -> argparse.Namespace:
    """The serve command's arguments (``model`` the run folder, the most recent run when
    none is given), checked: the web extra installed, the run trained, the port free.

    Raises:
        RnnlmError: The first mistake found.
    """
    parser = _parser("serve", "A local web page to write with a trained model (needs pip install \".[serve]\").",
                     model=LATEST_RUN)
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every network it is on)")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        raise RnnlmError(f"--port must be between 1 and 65535, got {args.port}")
    missing = [name for name in ("starlette", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise RnnlmError(f"serve needs {' and '.join(missing)}: pip install \"keras_rnnlm[serve]\" (in a checkout: pip install \".[serve]\")")
    if args.model is None:
        args.model = latest_run()
    check_trained(RunFolder(args.model))
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    with socket.socket(family) as probe:
        try:
            probe.bind((args.host, args.port))
        except OSError as error:
            raise RnnlmError(f"cannot listen on {args.host}:{args.port} ({error.strerror}); pass --port with another port") from None
    return args


def check_text(text: str, what: str) -> None:
    """Refuses text that is not valid Unicode (a command line or input in another encoding)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise RnnlmError(f"{what} is not valid UTF-8 (at character {error.start + 1}); give UTF-8 text") from None


# A corpus this small is tokenized whole before TensorFlow loads, so that one too short to
# train on is told at once (a few milliseconds); a larger one is checked as training reads it.
SMALL_CORPUS_BYTES = 1 << 20


def check_corpus_text(config: Config, sizes: bool = True) -> None:
    """Refuses a corpus or validation file that is missing, empty or not text, from its
    first bytes, and (with ``sizes``) a small corpus too short for one example or without
    validation text.

    Raises:
        RnnlmError: The first problem found.
    """
    documents = corpus_documents(config.corpus.paths, config.corpus.builtin) if config.corpus.paths else []
    valid_documents = find_documents(config.corpus.valid_paths)
    check_readable(documents)
    check_readable(valid_documents)
    if sizes and documents and sum(document.size for document in [*documents, *valid_documents]) <= SMALL_CORPUS_BYTES:
        check_text_sizes(config.data, *text_sizes(config, documents, valid_documents))


def check_trained(run: RunFolder) -> Config:
    """Refuses a folder that is not a run, a run with no whole model yet, or a damaged
    config or vocabulary.

    Returns:
        The run's config.
    """
    config = run.load_config()
    run.require_model()
    Vocabulary.load(run.vocabulary)
    return config


def check_export_folder(out: Path, flag: str, kind: str = "export") -> None:
    """Refuses an export folder that cannot be written, or that holds anything but an
    export of this ``kind`` ("export": a SavedModel; "web export") that keras_rnnlm wrote."""
    check_folder_path(out, flag)
    Owned(out, kind).check(f"choose another {flag}")
