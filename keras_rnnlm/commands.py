"""The commands: ``python -m keras_rnnlm.prepare``, ``.train``, ``.launch``, ``.tune``,
``.generate``, ``.evaluate`` and ``.export``.

Each parses its command line, checks what it can without TensorFlow (the arguments, the
config, the paths, the corpus' first bytes, the run folder), and only then imports the
module that does the work: a mistake costs a fraction of a second and one line, not
TensorFlow's start-up. ``keras_rnnlm.cli.run`` runs them.

Example:
    python -m keras_rnnlm.train --corpus lyrics.txt --run-name lyrics
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import sys
from pathlib import Path

from keras_rnnlm.cli import ArgumentParser, load_tensorflow
from keras_rnnlm.config import Config, load_config
from keras_rnnlm.corpus import check_readable, corpus_documents, find_documents
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.runs import RunFolder, latest_run
from keras_rnnlm.sampling import (
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    MAX_TOKENS,
    STRATEGIES,
    Sampling,
)
from keras_rnnlm.shards import PreparedCorpus, is_prepared, prepared_corpus_path

logger = logging.getLogger("keras_rnnlm")

MAX_SAMPLES = 1_000  # texts one generate command writes at once: more is almost surely a typo
VERBOSE_HELP = "also show TensorFlow's own start-up and device notices (or set KERAS_RNNLM_VERBOSE=1)"


def train_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m keras_rnnlm.train",
        description="Train a word- or character-level LSTM language model on your text.",
    )
    parser.add_argument("--config", help="TOML config (default: the built-in defaults, as in configs/default.toml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set model.units=512 (repeatable)")
    parser.add_argument("--corpus", nargs="+", metavar="PATH", help="text files or folders of .txt files (default: built-in corpus)")
    parser.add_argument("--data", metavar="DIR", help="a corpus prepared by python -m keras_rnnlm.prepare (instead of --corpus)")
    parser.add_argument("--valid", nargs="+", metavar="PATH", help="separate validation files (default: the end of each corpus file)")
    parser.add_argument("--run-name", help="run folder name (default: the config's name)")
    parser.add_argument("--output-dir", default="saved_models", help="where run folders go (default: saved_models)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), help="where to train (default: auto)")
    parser.add_argument("--seed", type=int, help="random seed (default: from the config)")
    parser.add_argument("--epochs", type=int, help="most epochs (default: from the config)")
    parser.add_argument("--export", nargs="?", const="", metavar="DIR",
                        help="then export a TensorFlow SavedModel to DIR (default DIR: <run folder>/saved_model)")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    return parser


def config_from_args(args) -> Config:
    """The config file, then ``--set`` overrides, then the dedicated flags."""
    overrides = list(args.set)
    for flag, key in (("device", "train.device"), ("seed", "train.seed"), ("epochs", "train.epochs"), ("run_name", "name")):
        value = getattr(args, flag, None)  # prepare has no --device, --epochs or --run-name
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")  # A JSON string or integer is valid TOML.
    config = load_config(args.config, overrides)
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


def train(argv: list[str] | None = None) -> int:
    args, config, run_dir = checked_train_arguments(argv)

    load_tensorflow()
    from keras_rnnlm.export import export_run
    from keras_rnnlm.train import train as train_model

    train_model(config, run_dir, overwrite=args.overwrite)
    if args.export is not None:
        export_run(run_dir, args.export or run_dir / "saved_model")
    return 0


def checked_train_arguments(argv: list[str] | None) -> tuple:
    """The train command's arguments, config and run folder, checked without TensorFlow:
    the corpus' first bytes (or a prepared corpus' settings and file sizes), the run
    folder and the export folder.

    Raises:
        RnnlmError: The first mistake found.
    """
    args = train_parser().parse_args(argv)
    config = config_from_args(args)
    run_dir = Path(args.output_dir) / config.name
    if prepared := prepared_corpus_path(config):
        corpus = PreparedCorpus(prepared)
        corpus.check_settings(config)
        corpus.check_files(checksums=False)  # training compares the checksums too
    else:
        _check_corpus_text(config)
    RunFolder(run_dir).state(config, args.overwrite)  # refuses a folder that holds something else
    if args.export:
        _check_export_folder(Path(args.export))
    return args, config, run_dir


def prepare(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m keras_rnnlm.prepare",
        description="Tokenize a corpus once into token shards that training reads from disk as it goes (train --data DIR).",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    parser.add_argument("--corpus", nargs="+", metavar="PATH", help="text files or folders of .txt files (default: built-in corpus)")
    parser.add_argument("--valid", nargs="+", metavar="PATH", help="separate validation files (default: the end of each corpus file)")
    parser.add_argument("--config", help="TOML config whose corpus and vocab settings to use (default: the built-in defaults)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one config value (repeatable)")
    parser.add_argument("--seed", type=int, help="train.seed: chooses the held-out lines in line mode (default: from the config)")
    parser.add_argument("--overwrite", action="store_true", help="replace a corpus prepared in --out from other text or settings")
    parser.add_argument("--shard-tokens", type=int, default=None, metavar="N", help="ids per shard file (default: 67,108,864)")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    if args.shard_tokens is not None and args.shard_tokens < 1:
        raise RnnlmError(f"--shard-tokens must be at least 1, got {args.shard_tokens}")
    if prepared_corpus_path(config):
        raise RnnlmError("--corpus names a prepared corpus; give the text files it was prepared from")
    _check_corpus_text(config)

    from keras_rnnlm.prepare import SHARD_TOKENS, check_out_folder
    from keras_rnnlm.prepare import prepare as prepare_corpus

    if not args.overwrite:
        check_out_folder(Path(args.out))
    prepare_corpus(config, args.out, overwrite=args.overwrite, shard_tokens=args.shard_tokens or SHARD_TOKENS)
    same_settings = "".join(f" {flag} {value}" for flag, value in [("--config", args.config), *(("--set", item) for item in args.set)] if value)
    logger.info("train from it: python -m keras_rnnlm.train --data %s%s", args.out, same_settings)
    return 0


def launch(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m keras_rnnlm.launch",
        description="Train one model with several worker processes on this machine (MultiWorkerMirroredStrategy on loopback).",
    )
    parser.add_argument("--workers", type=int, required=True, help="how many worker processes (2 or more)")
    parser.add_argument("train_arguments", nargs="*", metavar="-- TRAIN ARGUMENTS", help="arguments of python -m keras_rnnlm.train")
    args = parser.parse_args(argv)
    if args.workers < 2:
        raise RnnlmError(f"--workers must be at least 2, got {args.workers}; one process is python -m keras_rnnlm.train")
    checked_train_arguments(args.train_arguments)  # a mistake is one line, before any worker starts

    from keras_rnnlm.launch import launch as launch_workers

    return launch_workers(args.workers, args.train_arguments)


def tune(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m keras_rnnlm.tune",
        description="Search config values with KerasTuner: each trial trains as train does; the best config and model are kept.",
    )
    parser.add_argument("--search", required=True, metavar="SEARCH.toml",
                        help="config keys and their ranges, e.g. configs/search/default.toml")
    parser.add_argument("--config", help="TOML config the trials vary (default: the built-in defaults)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one config value (repeatable)")
    parser.add_argument("--max-trials", type=int, default=20, help="trials in all, earlier runs of the search included (default: 20)")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="minutes in all, earlier runs included (default: 30)")
    parser.add_argument("--strategy", choices=("bayesian", "random", "hyperband"), default="bayesian",
                        help="KerasTuner's oracle (default: bayesian)")
    parser.add_argument("--corpus", nargs="+", metavar="PATH", help="text files or folders of .txt files (default: built-in corpus)")
    parser.add_argument("--valid", nargs="+", metavar="PATH", help="separate validation files (default: the end of each corpus file)")
    parser.add_argument("--run-name", dest="tune_name", help="tuning folder name (default: the config's name and _tune)")
    parser.add_argument("--output-dir", default="saved_models", help="where the tuning folder goes (default: saved_models)")
    parser.add_argument("--overwrite", action="store_true", help="start the search again, deleting the folder's trials")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), help="where to train (default: auto)")
    parser.add_argument("--seed", type=int, help="seeds the search and every trial (default: from the config)")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
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
    config = config_from_args(args)
    if prepared_corpus_path(config):
        raise RnnlmError("--corpus names a prepared corpus; give the text files (tune prepares them once for its trials)")
    _check_corpus_text(config)
    from keras_rnnlm.search_space import read_search

    space = read_search(args.search, config)

    load_tensorflow()
    from keras_rnnlm.tune import tune as search

    search(config, space, Path(args.output_dir) / (args.tune_name or f"{config.name}_tune"), args.strategy,
           args.max_trials, args.max_minutes, args.overwrite)
    return 0


def generate_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m keras_rnnlm.generate", description="Write text with a trained model.")
    parser.add_argument("--model", help="run folder (default: the most recent run in saved_models/)")
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
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    return parser


def generate(argv: list[str] | None = None) -> int:
    args = generate_parser().parse_args(argv)
    if not 1 <= args.num_samples <= MAX_SAMPLES:
        raise RnnlmError(f"--num-samples must be between 1 and {MAX_SAMPLES:,}, got {args.num_samples:,}")
    if not 0 <= args.seed < 2**31:
        raise RnnlmError(f"--seed must be between 0 and 2,147,483,647, got {args.seed:,}")
    _check_text(args.prompt, "the prompt")
    if not 1 <= args.words <= MAX_TOKENS:
        raise RnnlmError(f"the number of words must be between 1 and {MAX_TOKENS:,}, got {args.words:,}")
    if args.max_lines is not None and not 0 <= args.max_lines < 2**31:
        raise RnnlmError(f"max-lines must be 0 (no limit) or more, and below 2,147,483,648, got {args.max_lines}")
    sampling = Sampling.from_strategy(args.strategy, args.temperature, args.top_k, args.top_p)
    if args.model is None:
        args.model = latest_run()
        logger.info("using %s (the most recent run; pass --model to choose another)", args.model)
    _check_trained(RunFolder(args.model))

    load_tensorflow()
    from keras_rnnlm.generate import Generator

    generator = Generator.from_run(args.model)
    if args.interactive and hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")  # bytes that are not UTF-8 get a one-line error, not a traceback
    prompts = (line.rstrip("\n") for line in sys.stdin) if args.interactive else [args.prompt]
    if args.interactive:
        print("type a prompt and press Enter (Ctrl-D to stop)", file=sys.stderr)
    for number, prompt in enumerate(prompts):
        if args.interactive:
            _check_text(prompt, f"prompt {number + 1}")
        if unknown := generator.unknown_words(prompt):
            logger.warning("warning: not in the vocabulary, read as <unk>: %s", ", ".join(dict.fromkeys(unknown)))
        texts = generator.generate([prompt] * args.num_samples, args.words, sampling, seed=args.seed + number, max_lines=args.max_lines)
        print(("\n\n" if generator.tokenizer.level == "word" else "\n").join(text.rstrip("\n") for text in texts), flush=True)
    return 0


def evaluate(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m keras_rnnlm.evaluate", description="Score a trained model on a text: perplexity and accuracy."
    )
    parser.add_argument("--model", required=True, help="run folder, e.g. saved_models/psalms")
    parser.add_argument("--text", required=True, nargs="+", help="text files (or folders of .txt) to score")
    parser.add_argument("--batch-size", type=int, default=256, help="windows per step, windows mode (default: 256)")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        raise RnnlmError(f"--batch-size must be at least 1, got {args.batch_size}")
    _check_trained(RunFolder(args.model))
    check_readable(find_documents(args.text))

    load_tensorflow()
    from keras_rnnlm.evaluate import evaluate as score_run

    scores = score_run(args.model, args.text, args.batch_size)
    unit = "character" if scores["level"] == "char" else "token"
    print(f"{unit}s evaluated: {scores['tokens']:,} ({scores['scoring']})")
    print(f"cross-entropy:    {scores['cross_entropy']:.4f} nats/{unit} ({scores['bits_per_token']:.4f} bits/{unit})")
    print(f"perplexity:       {scores['perplexity']:.2f}")
    print(f"accuracy:         {scores['accuracy']:.4f}")
    return 0


def export(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m keras_rnnlm.export",
        description="Export a trained run as a TensorFlow SavedModel that serves text without keras_rnnlm.",
    )
    parser.add_argument("--model", required=True, help="run folder, e.g. saved_models/psalms")
    parser.add_argument("--out", help="SavedModel folder to write (default: <run folder>/saved_model)")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.model) / "saved_model"
    _check_trained(RunFolder(args.model))
    _check_export_folder(out)

    load_tensorflow()
    from keras_rnnlm.export import export_run

    export_run(args.model, out)
    return 0


def _check_text(text: str, what: str) -> None:
    """Refuses text that is not valid Unicode (a command line or input in another encoding)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise RnnlmError(f"{what} is not valid UTF-8 (at character {error.start + 1}); give UTF-8 text") from None


def _check_corpus_text(config: Config) -> None:
    """Refuses a corpus or validation file that is missing, empty or not text, from its first bytes."""
    check_readable(corpus_documents(config.corpus.paths, config.corpus.builtin) if config.corpus.paths else [])
    check_readable(find_documents(config.corpus.valid_paths))


def _check_trained(run: RunFolder) -> None:
    """Refuses a folder that is not a run, or a run with no model yet."""
    run.load_config()
    run.require_model()


def _check_export_folder(out: Path) -> None:
    if out.exists() and not (out / "saved_model.pb").is_file():
        raise RnnlmError(f"{out} exists and is not a SavedModel; choose another --out or remove it")
