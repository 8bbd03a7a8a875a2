"""Training a language model: ``python -m keras_rnnlm.train``.

Reads the corpus (the built-in one when none is given), builds the vocabulary, windows
the token stream with tf.data, trains the model and writes the run folder
(``saved_models/<name>/``). Running the same command again resumes an interrupted run
from its last backup and ends where the uninterrupted run would have.

Example:
    python -m keras_rnnlm.train                                  # built-in corpus
    python -m keras_rnnlm.train --corpus lyrics.txt --run-name lyrics
    python -m keras_rnnlm.train --config configs/tiny.toml --set model.units=64
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m keras_rnnlm.train: the arguments are checked before TensorFlow loads
    import sys

    from keras_rnnlm import cli

    sys.exit(cli.main("train"))

import argparse
import atexit
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import tensorflow as tf

from keras_rnnlm.backup import RunBackup, TrainingState, restore_training_state
from keras_rnnlm.callbacks import (
    AveragedWeights, BestModelCheckpoint, CurvesPlot, EpochTensorBoard, FirstStepLog, OutputKernel, Perplexity, ResetStates, SampleText,
    StopOnNaN, TimeBudget, WarmUp,
)
from keras_rnnlm.cache import fit_cache
from keras_rnnlm.config import Config
from keras_rnnlm.corpus import corpus_documents
from keras_rnnlm.data import EVALUATION_LANES, TrainingData, lanes, training_data
from keras_rnnlm.devices import on_gpu, select_strategy, set_precision
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.export import export_run
from keras_rnnlm.files import Owned
from keras_rnnlm.generate import Generator
from keras_rnnlm.model import build_model, compile_model, output_rows, training_model, with_vocabulary
from keras_rnnlm.multiworker import Cluster, lost_workers_named, worker_batches
from keras_rnnlm.runs import FINISHED, NEW, RESUME, RunFolder, write_summary
from keras_rnnlm.shards import PreparedCorpus, prepared_corpus_path
from keras_rnnlm.splits import Segments, corpus_segments
from keras_rnnlm.tokenizer import Tokenizer
from keras_rnnlm.vocab import Vocabulary

logger = logging.getLogger("keras_rnnlm")

# A corpus of this many bytes read as text gets a hint that prepare would make starts fast.
PREPARE_HINT_BYTES = 100 << 20


def main(args: argparse.Namespace) -> int:
    """``python -m keras_rnnlm.train``, its arguments checked (:func:`keras_rnnlm.arguments.train`):
    trains, then exports if ``--export`` was given."""
    train(args.config, args.run_dir, overwrite=args.overwrite, cluster=args.cluster)
    if args.export is not None and args.cluster.chief:
        export_run(args.run_dir, args.export or args.run_dir / "saved_model")
    return 0


def train(
    config: Config,
    run_dir: str | Path,
    overwrite: bool = False,
    strategy: tf.distribute.Strategy | None = None,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = "auto",
    cluster: Cluster | None = None,
) -> dict:
    """Trains a model as ``config`` says and writes the run folder.

    Args:
        config: The run's settings.
        run_dir: The run folder; an unfinished run there with the same config resumes.
        overwrite: Replace a run keras_rnnlm wrote there, whatever its config (a folder
            holding anything else is refused).
        strategy: Where to train; None picks from ``config.train.device`` and ``cluster``.
        extra_callbacks: More Keras callbacks, run after the run's own.
        verbose: Keras' progress display: "auto" draws a bar on a terminal and prints
            one line an epoch otherwise.
        cluster: The workers training together; None reads ``TF_CONFIG`` (one machine
            when it is unset).

    Returns:
        The run summary also written to ``summary.json``; on a worker other than the
        chief, which writes no run folder, ``{"worker", "epochs_trained"}``.

    Raises:
        RnnlmError: Bad corpus, config or run folder, another process training into the
            folder, a worker lost, or a loss that became NaN.
    """
    cluster = cluster or Cluster.from_environment()
    run = RunFolder(run_dir)
    if not cluster.chief:  # a worker other than the chief writes nothing in the folder, no lock either
        with _package_log_level_kept():
            return _train(config, run, cluster, overwrite, strategy, extra_callbacks, verbose)
    with run.lock():  # one process trains into a folder at a time
        return _train(config, run, cluster, overwrite, strategy, extra_callbacks, verbose)


def _train(config: Config, run: RunFolder, cluster: Cluster, overwrite: bool, strategy, extra_callbacks, verbose) -> dict:
    started = time.time()
    state = run.state(config, overwrite)  # Refuses a conflicting folder before any work.
    if state == FINISHED:
        logger.info("%s is already trained; pass --overwrite to train it again", run.path)
        return json.loads(run.summary.read_text(encoding="utf-8"))
    keras.utils.set_random_seed(config.train.seed)
    # Across workers the strategy comes first: TensorFlow sets up its collective ops before
    # any other op runs, and joining waits for every worker, so all have read the run
    # folder's state by then.
    joined = placement(config, cluster, strategy) if cluster.workers else None

    vocabulary, train_segments, valid_segments = read_corpus(config, run, state)
    config.check_vocabulary(len(vocabulary))
    data = training_data(config.data, train_segments, valid_segments, config.train.seed, shard=cluster.shard)
    tokenizer = Tokenizer.from_config(config.corpus)
    opening = tokenizer.text_from_tokens(vocabulary.tokens_from_ids(valid_segments.first_tokens(config.data.window_size)))
    # The datasets hold what they need; the cache is fitted on the validation text at the end.
    del train_segments
    if not (config.data.mode == "bptt" and config.train.fit_cache):
        del valid_segments
    logger.info("%s (%s sequences)", data.description, config.corpus.sequences)
    strategy = joined or placement(config, cluster, strategy)

    # Only now, with the input known good, does anything get written. A worker other than
    # the chief runs every callback as the chief does (saving reads variables that all
    # workers must read together) but writes into a scratch folder of its own.
    out = run if cluster.chief else _scratch_run_folder(run)
    if state == NEW or not cluster.chief:
        out.create(config, vocabulary)
    else:
        Owned(run.path, "run").claim()  # a run begun by an earlier version gets its marker
    started_from = fine_tune_start(config) if config.train.init_from else None
    weights = starting_weights(config, len(vocabulary)) if started_from and state == NEW else None
    model, trainer, resumed = build_models(config, len(vocabulary), strategy, run.backup_file if state == RESUME else None,
                                           weights)
    out.keep_history(resumed.epoch if resumed else 0)  # a resumed run writes the later epochs' rows again
    window_size = None if config.data.mode == "bptt" else config.data.window_size
    generator = Generator(model, vocabulary, tokenizer, window_size, line_mode=config.corpus.sequences == "lines",
                          attention_memory=config.model.memory)
    steps_per_epoch = config.train.steps_per_epoch or data.steps_per_pass
    callbacks = [FirstStepLog(started), *run_callbacks(config, out, model, trainer, generator, opening)]
    if config.train.max_minutes:
        callbacks.append(TimeBudget(config.train.max_minutes, started))
    # Last of the run's own: it saves each epoch once the epoch's history row and checkpoint are written.
    callbacks += [RunBackup(out.backup_file, callbacks, config.train.backup_every_steps, steps_per_epoch, resumed),
                  *extra_callbacks]
    losses = fit(trainer, data, strategy, cluster, callbacks, config.train.epochs, steps_per_epoch, resumed,
                 verbose=_progress(verbose) if cluster.chief else 0)
    if not cluster.chief:
        return {"worker": cluster.index, "epochs_trained": len(losses)}
    if losses and not math.isfinite(losses[-1]):  # StopOnNaN stopped it.
        _stop_after_nan(run)
    summary = summarize(run, config, len(vocabulary), data, steps_per_epoch, started)
    if started_from:
        summary = {**summary, "init_from": started_from}
        write_summary(run, summary)
    if config.data.mode == "bptt" and config.train.fit_cache:
        summary = fitted_cache(run, config, valid_segments, summary)
    return summary


def fine_tune_start(config: Config) -> dict:
    """Where a fine-tune starts (``train.init_from``), for its summary: the run and the
    SHA-256 of its ``model.keras``. Logs what the fine-tune took from it."""
    base = RunFolder(config.train.init_from)
    digest = hashlib.sha256(base.model.read_bytes()).hexdigest()
    logger.info("fine-tuning %s (model.keras sha256 %s…): its tokenization and architecture; learning rate %g "
                "(train.learning_rate: the run's own unless set), early stopping on this text's held-out part",
                base.path, digest[:12], config.train.learning_rate)
    return {"run": str(base.path.resolve()), "model_sha256": digest}


def starting_weights(config: Config, vocabulary_size: int) -> list:
    """A fine-tune's first weights: ``train.init_from``'s model, grown for the vocabulary
    extended by the new text (:func:`~keras_rnnlm.model.with_vocabulary`)."""
    window_size = None if config.data.mode == "bptt" else config.data.window_size
    started_from = RunFolder(config.train.init_from).load_model()
    return with_vocabulary(started_from, config.model, window_size, vocabulary_size).get_weights()


def fitted_cache(run: RunFolder, config: Config, valid_segments: Segments, summary: dict) -> dict:
    """Fits the continuous cache of the saved model on the validation text, keeps its
    settings in the run folder and adds its figures to ``summary.json``."""
    settings = fit_cache(run.load_model(), lanes(valid_segments, EVALUATION_LANES, config.data.bptt_steps), config.model.memory)
    settings.save(run.path)
    summary = {**summary, "cache": dataclasses.asdict(settings), "cache_val_perplexity": math.exp(settings.valid_cross_entropy)}
    write_summary(run, summary)
    logger.info("cache: %s; validation perplexity %.2f without it, %.2f with it (read in %d lanes; evaluate --cache)",
                settings.describe(), math.exp(settings.valid_cross_entropy_without), summary["cache_val_perplexity"],
                EVALUATION_LANES)
    return summary


def placement(config: Config, cluster: Cluster, strategy: tf.distribute.Strategy | None = None) -> tf.distribute.Strategy:
    """Where training runs: ``strategy``, or the one ``config.train.device`` and the
    cluster choose, checked against the config. On a worker other than the chief, this
    package's log is warnings only from here on: the chief's log tells the run.

    Raises:
        RnnlmError: A placement the config cannot train on (bptt on several devices, a
            batch that does not divide among the replicas), or no GPU where one was asked for.
    """
    strategy = strategy or select_strategy(config.train.device, cluster)
    config.check_replicas(strategy.num_replicas_in_sync, len(cluster.workers))
    if not cluster.chief:
        logging.getLogger("keras_rnnlm").setLevel(logging.WARNING)
    return strategy


def build_models(
    config: Config, vocabulary_size: int, strategy: tf.distribute.Strategy, backup: Path | None = None,
    weights: list | None = None,
) -> tuple[keras.Model, keras.Model, TrainingState | None]:
    """The model ``model.keras`` keeps (stock Keras layers, loss, optimizer and metrics)
    and the model that trains its weights (the same layers, in lanes that carry their
    state in bptt mode, the output tied to the embeddings if asked, speed paths swapped
    in), under ``strategy`` and the configured precision; with a ``backup``, the training
    model goes on from it, exactly (:func:`~keras_rnnlm.backup.restore_training_state`);
    with ``weights`` (a fine-tune's start), the model starts from them.

    Returns:
        The model, the training model and the state restored from the backup (None without one).
    """
    bptt = config.data.mode == "bptt"
    caller_policy = keras.mixed_precision.global_policy()
    try:
        set_precision(config.train.precision, strategy)
        with strategy.scope():
            model = build_model(config.model, None if bptt else config.data.window_size, vocabulary_size,
                                unroll=not on_gpu(strategy))
            compile_model(model, config.train)
            if weights is not None:  # before the training model copies any (the sampled softmax's rows)
                model.set_weights(weights)
            trainer = training_model(
                model, config.train, lanes=config.data.batch_size if bptt else None,
                bptt_steps=config.data.bptt_steps, tie_embeddings=config.model.tie_embeddings,
                sampled_candidates=config.model.sampled_candidates if config.model.softmax == "sampled" else 0,
                seed=config.train.seed, regularize=config.model, attention_memory=config.model.memory,
            )
            resumed = restore_training_state(trainer, backup) if backup else None
    finally:  # the models keep their policy; the caller's next model gets theirs
        keras.mixed_precision.set_global_policy(caller_policy)
    model.summary(print_fn=lambda line, **_: logger.info(line))
    train = config.train
    logger.info("optimizer: %s at %g (train.optimizer, train.learning_rate)%s%s", train.optimizer, train.learning_rate,
                f", reached over {train.warmup_steps} steps (train.warmup_steps)" if train.warmup_steps else "",
                f", the gradient norm clipped at {train.clipnorm:g}" if train.clipnorm > 0 else "")
    if resumed:
        logger.info("resuming at epoch %d, step %d, from %s", resumed.epoch + 1, resumed.step, backup)
    return model, trainer, resumed


def fit(
    trainer: keras.Model, data: TrainingData, strategy: tf.distribute.Strategy, cluster: Cluster,
    callbacks: list[keras.callbacks.Callback], epochs: int, steps_per_epoch: int, resumed: TrainingState | None,
    verbose: int,
) -> list[float]:
    """Trains with Keras' ``fit`` up to ``epochs``, from the start or from where
    ``resumed`` left off: the rest of the epoch a killed run was inside, then the others.
    Across workers, each worker reads its share of every batch.

    Returns:
        The training loss of each epoch trained.

    Raises:
        RnnlmError: A worker stopped answering, or the workers could not reach each other.
    """
    first_epoch, step = (resumed.epoch, resumed.step) if resumed else (0, 0)

    def batches(dataset):
        return worker_batches(dataset, strategy) if cluster.workers else dataset

    def fit_epochs(first, steps_done=0, last=epochs):
        """Epochs first..last-1, the first from batch steps_done on."""
        return trainer.fit(
            batches(data.train(first * steps_per_epoch + steps_done)),  # every batch from there on, endlessly
            steps_per_epoch=steps_per_epoch - steps_done,
            initial_epoch=first,
            validation_data=batches(data.valid),
            epochs=last,
            callbacks=callbacks,
            shuffle=False,  # The dataset orders itself: windows shuffled with the run's seed, lanes in order.
            verbose=verbose,
        ).history.get("loss", [])

    started_at = int(trainer.optimizer.iterations.numpy())
    losses = []
    with lost_workers_named(lambda: int(trainer.optimizer.iterations.numpy()) - started_at):
        if step:  # the rest of the epoch a killed run was inside
            trainer.test_on_batch(*next(iter(data.train(0))))  # builds the metrics the backup restores
            losses = fit_epochs(first_epoch, step, first_epoch + 1)
            first_epoch += 1
        if not getattr(trainer, "stop_training", False) and first_epoch < epochs:  # early stopping may have ended it
            losses += fit_epochs(first_epoch)
    return losses


def summarize(run: RunFolder, config: Config, vocabulary_size: int, data: TrainingData, steps_per_epoch: int,
              started: float) -> dict:
    """Writes ``summary.json`` from the history (the best epoch's validation figures),
    removes the backup (nothing is left to resume) and logs the result.

    Raises:
        RnnlmError: No epoch reached a finite validation loss.
    """
    rows = [row for row in run.read_history() if math.isfinite(row["val_loss"])]
    if not rows:
        raise RnnlmError(f"training wrote no finite validation loss to {run.history}; lower train.learning_rate")
    best = min(rows, key=lambda row: row["val_loss"])
    summary = {
        "vocabulary_size": vocabulary_size,
        "mode": config.data.mode,
        "train_targets": data.train_targets,
        "steps_per_epoch": steps_per_epoch,
        "valid_targets": data.valid_targets,
        "epochs": len(rows),
        "best_epoch": int(best["epoch"]) + 1,
        "val_loss": best["val_loss"],
        "val_perplexity": best["val_perplexity"],
        "val_accuracy": best["val_accuracy"],
        "seconds_this_session": round(time.time() - started, 1),
    }
    write_summary(run, summary)
    shutil.rmtree(run.backup, ignore_errors=True)  # finished: nothing to resume
    logger.info(
        "done: best epoch %d of %d, validation perplexity %.2f (cross-entropy %.4f nats), model in %s",
        summary["best_epoch"], summary["epochs"], summary["val_perplexity"], summary["val_loss"], run.model,
    )
    return summary


def read_corpus(config: Config, run: RunFolder, state: str) -> tuple[Vocabulary, Segments, Segments]:
    """The vocabulary and the training and validation text, from a prepared corpus when
    ``corpus.paths`` names one, else read and tokenized now. A resumed run keeps the
    vocabulary it started with.

    Raises:
        RnnlmError: Unreadable text; a prepared corpus damaged, prepared with other
            settings, or whose vocabulary is not the resumed run's.
    """
    started_from = Vocabulary.load(RunFolder(config.train.init_from).vocabulary) if config.train.init_from else None
    if prepared_path := prepared_corpus_path(config):
        if started_from:
            raise RnnlmError("train.init_from reads the text with the vocabulary of the model it starts from, and a "
                             "prepared corpus has its own; pass the text with --corpus instead of --data")
        prepared = PreparedCorpus(prepared_path)
        prepared.check_settings(config)
        prepared.check_files()
        logger.info("corpus: %s", prepared.describe())
        vocabulary = prepared.vocabulary()
        if state != NEW and Vocabulary.load(run.vocabulary) != vocabulary:
            raise RnnlmError(
                f"the vocabulary of {prepared_path} is not the one {run.path} started with (was it prepared again?); "
                "pass --overwrite to train afresh"
            )
        return vocabulary, prepared.segments("train"), prepared.segments("valid")

    documents = corpus_documents(config.corpus.paths, config.corpus.builtin)
    logger.info("corpus: %d document(s): %s", len(documents), _names(documents))
    size = sum(document.size for document in documents)
    if size >= PREPARE_HINT_BYTES:
        logger.info(
            "the corpus is %s MB: tokenizing it takes a while at every start and resume; "
            "python -m keras_rnnlm.prepare (the same --corpus, --config and --set, and --out DIR) does it once, "
            "then train --data DIR starts in seconds", f"{size / 1e6:,.0f}",
        )
    if state != NEW:
        vocabulary, extend = Vocabulary.load(run.vocabulary), None  # a resumed run keeps its own
    elif started_from and not config.vocab.extend:
        vocabulary, extend = started_from, None  # new words read as <unk>
    else:
        vocabulary, extend = None, started_from
    train_segments, valid_segments, vocabulary = corpus_segments(config, documents, vocabulary, extend)
    return vocabulary, train_segments, valid_segments


def _scratch_run_folder(run: RunFolder) -> RunFolder:
    """A run folder in a temporary folder of its own, removed when the process ends, in
    whatever way but a kill."""
    scratch = Path(tempfile.mkdtemp(prefix="keras_rnnlm_worker_"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return RunFolder(scratch / run.path.name)


@contextlib.contextmanager
def _package_log_level_kept():
    """This package's log level as it was, after the block."""
    package = logging.getLogger("keras_rnnlm")
    level = package.level
    try:
        yield
    finally:
        package.setLevel(level)


def run_callbacks(
    config: Config, run: RunFolder, model: keras.Model, trainer: keras.Model, generator: Generator, opening: str
) -> list[keras.callbacks.Callback]:
    """The run's callbacks, but for the first-step log and the backup. Perplexity and the
    schedule (which logs the learning rate) come before everything that logs; the output
    rows the training model reads, if it reads any, are copied into the model's kernel
    before it is saved or writes; with weight averaging, the average is in place from
    validation until after the last of them."""
    train, rows = config.train, output_rows(trainer)
    averaged = AveragedWeights(trainer) if train.weight_averaging else None
    callbacks = [
        *([averaged.average_in] if averaged else []),
        *([WarmUp(train.warmup_steps, train.learning_rate)] if train.warmup_steps else []),
        Perplexity(),
        *([ResetStates()] if config.data.mode == "bptt" else []),
        *([OutputKernel(model, rows)] if rows is not None else []),
        StopOnNaN(),
    ]
    if train.reduce_lr_patience:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=train.reduce_lr_patience))
    if train.early_stopping_patience:
        # model.keras keeps the best epoch; the weights in memory need not go back to it.
        callbacks.append(keras.callbacks.EarlyStopping(patience=train.early_stopping_patience))
    callbacks += [
        BestModelCheckpoint(model, run.model, best=run.best_validation_loss()),
        keras.callbacks.CSVLogger(str(run.history), append=True),
        # Under sampled softmax the training loss is the sampled one: it reads lower.
        CurvesPlot(run, "train (sampled softmax)" if config.model.softmax == "sampled" else "train"),
    ]
    if train.tensorboard:
        callbacks.append(EpochTensorBoard(str(run.logs)))
    if train.sample_length:
        # A line-mode sample is a few independent lines (names), each started afresh.
        opening = "" if generator.line_mode else opening
        callbacks.append(
            SampleText(
                generator, train.sample_prompt or opening, train.sample_length, train.sample_temperature, train.seed,
                num_samples=5 if generator.line_mode else 1,
            )
        )
    if averaged:
        callbacks.append(averaged.raw_back)
    return callbacks


def _stop_after_nan(run: RunFolder) -> None:
    # The backup holds the diverged weights; resuming from it would only diverge again.
    shutil.rmtree(run.backup, ignore_errors=True)
    epoch = len(run.read_history())  # CSVLogger has written the diverged epoch too.
    kept = f"the best model so far is kept in {run.model}" if run.model.is_file() else "no model was saved"
    raise RnnlmError(
        f"the training loss became NaN (or infinite) in epoch {epoch}, so training stopped; {kept}; "
        "lower train.learning_rate or set train.clipnorm, then train again with --overwrite"
    )


def _names(documents) -> str:
    names = [document.name for document in documents]
    return ", ".join(names) if len(names) <= 5 else f"{', '.join(names[:4])}, ... {names[-1]}"


def _progress(verbose: int | str) -> int:
    if verbose != "auto":
        return int(verbose)
    return 1 if sys.stdout.isatty() else 2  # A bar on a terminal; one line an epoch in a log.
