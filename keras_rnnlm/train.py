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

if __name__ == "__main__":  # python -m keras_rnnlm.train: checked before TensorFlow loads (keras_rnnlm.commands)
    import sys

    from keras_rnnlm import cli, commands

    sys.exit(cli.run(commands.train))

import atexit
import contextlib
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

from keras_rnnlm.backup import RunBackup, restore_training_state
from keras_rnnlm.callbacks import BestModelCheckpoint, CurvesPlot, FirstStepLog, Perplexity, ResetStates, SampleText, OutputKernel
from keras_rnnlm.config import Config
from keras_rnnlm.corpus import corpus_documents
from keras_rnnlm.data import Segments, training_data
from keras_rnnlm.devices import on_gpu, select_strategy, set_precision
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.generate import Generator
from keras_rnnlm.model import build_model, compile_model, output_rows, training_model
from keras_rnnlm.multiworker import cluster_workers, fit_across_workers, worker_index
from keras_rnnlm.runs import FINISHED, NEW, RESUME, RunFolder, read_history, tokenizer_for, write_summary
from keras_rnnlm.shards import PreparedCorpus, prepared_corpus_path
from keras_rnnlm.splits import corpus_segments
from keras_rnnlm.vocab import Vocabulary

logger = logging.getLogger("keras_rnnlm")

# A corpus of this many bytes read as text gets a hint that prepare would make starts fast.
PREPARE_HINT_BYTES = 100 << 20


def train(
    config: Config,
    run_dir: str | Path,
    overwrite: bool = False,
    strategy: tf.distribute.Strategy | None = None,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = "auto",
) -> dict:
    """Trains a model as ``config`` says and writes the run folder.

    Args:
        config: The run's settings.
        run_dir: The run folder; an unfinished run there with the same config resumes.
        overwrite: Replace whatever the folder holds.
        strategy: Where to train; None picks from ``config.train.device``.
        extra_callbacks: More Keras callbacks, run after the run's own.
        verbose: Keras' progress display: "auto" draws a bar on a terminal and prints
            one line an epoch otherwise.

    Returns:
        The run summary also written to ``summary.json``.

    Raises:
        RnnlmError: Bad corpus, config or run folder, another process training into the
            folder, or a loss that became NaN.
    """
    run = RunFolder(run_dir)
    if worker_index():  # a worker other than the chief writes nothing in the folder, no lock either
        with _package_log_level_kept():
            return _train(config, run, overwrite, strategy, extra_callbacks, verbose)
    with run.lock():  # one process trains into a folder at a time
        return _train(config, run, overwrite, strategy, extra_callbacks, verbose)


def _train(config, run, overwrite, strategy, extra_callbacks, verbose) -> dict:
    started = time.time()
    state = run.state(config, overwrite)  # Refuses a conflicting folder before any work.
    if state == FINISHED:
        logger.info("%s is already trained; pass --overwrite to train it again", run.path)
        return _read_summary(run)
    keras.utils.set_random_seed(config.train.seed)
    tokenizer = tokenizer_for(config)
    # Across workers: the strategy first (TensorFlow sets up its collective ops before any
    # other op runs, and joining the cluster waits for every worker, so all have read the
    # run folder's state by then), and each worker reads its share of every batch.
    workers, chief = len(cluster_workers()), worker_index() == 0
    if workers:
        strategy = strategy or select_strategy(config.train.device)
        _check_across_workers(config, workers, strategy.num_replicas_in_sync)
        if not chief:  # from here on the chief's log tells the run; the others' would repeat it
            logging.getLogger("keras_rnnlm").setLevel(logging.WARNING)

    # Text -> ids: read from the text now, or from a prepared corpus' shards as batches need them.
    vocabulary, train_segments, valid_segments = _read_corpus(config, run, state)
    if config.model.softmax == "sampled" and config.model.sampled_candidates >= len(vocabulary):
        raise RnnlmError(
            f"model.sampled_candidates = {config.model.sampled_candidates} is not below the vocabulary's {len(vocabulary):,} "
            f'tokens; set it lower, or model.softmax = "full" (for a vocabulary this small the full softmax is cheap)'
        )
    data = training_data(config.data, train_segments, valid_segments, config.train.seed,
                         shard=(worker_index(), workers) if workers else (0, 1))
    opening = tokenizer.text_from_tokens(vocabulary.tokens_from_ids(valid_segments.first_tokens(config.data.window_size)))
    del train_segments, valid_segments  # the datasets hold what they need
    logger.info("%s (%s sequences)", data.description, config.corpus.sequences)
    steps_per_epoch = config.train.steps_per_epoch or data.steps_per_pass

    bptt = config.data.mode == "bptt"
    window_size = None if bptt else config.data.window_size
    strategy = strategy or select_strategy(config.train.device)
    if bptt and strategy.num_replicas_in_sync > 1:
        fix = ("train it on one machine, without TF_CONFIG" if workers else
               "pass --device cpu, or make one GPU visible with CUDA_VISIBLE_DEVICES=0")
        raise RnnlmError(
            f'data.mode = "bptt" trains on one device (its lanes carry their state from step to step), and '
            f"{strategy.num_replicas_in_sync} were found; {fix}"
        )
    caller_policy = keras.mixed_precision.global_policy()

    # Only now, with the input known good, does anything get written. A worker other than
    # the chief runs every callback as the chief does (saving reads variables that all
    # workers must read together) but writes into a scratch folder of its own.
    out = run if chief else _scratch_run_folder(run)
    if state == NEW or not chief:
        out.create(config, vocabulary)
    try:
        set_precision(config.train.precision, strategy)
        with strategy.scope():
            # What model.keras keeps: stock Keras layers, loss, optimizer and metrics.
            model = build_model(config.model, window_size, len(vocabulary), unroll=not on_gpu(strategy))
            compile_model(model, config.train)
            # What trains model's weights: the same layers, in lanes that carry their state
            # (bptt), the output tied to the embeddings if asked, speed paths swapped in.
            trainer = training_model(
                model, config.train, lanes=config.data.batch_size if bptt else None,
                bptt_steps=config.data.bptt_steps, tie_embeddings=config.model.tie_embeddings,
                sampled_candidates=config.model.sampled_candidates if config.model.softmax == "sampled" else 0,
                seed=config.train.seed,
            )
            # A resumed run goes on from its backup, exactly: what came after it is trained again.
            resumed = restore_training_state(trainer, run.backup_file) if state == RESUME else None
    finally:  # the models keep their policy; the caller's next model gets theirs
        keras.mixed_precision.set_global_policy(caller_policy)
    model.summary(print_fn=lambda line, **_: logger.info(line))

    first_epoch, step = (resumed.epoch, resumed.step) if resumed else (0, 0)
    out.keep_history(first_epoch)
    if resumed:
        logger.info("resuming at epoch %d, step %d, from %s", first_epoch + 1, step, run.backup_file)

    generator = Generator(model, vocabulary, tokenizer, window_size, line_mode=config.corpus.sequences == "lines")
    callbacks = [FirstStepLog(started), *_callbacks(config, out, model, output_rows(trainer), generator, opening)]
    # Last: it saves each epoch once the epoch's history row and checkpoint are written.
    callbacks.append(RunBackup(out.backup_file, callbacks, config.train.backup_every_steps, steps_per_epoch, resumed))
    callbacks.extend(extra_callbacks)

    def fit(first, steps_done=0, last=config.train.epochs):
        """Trains epochs first..last-1, the first from batch steps_done on; the loss per epoch."""
        if workers:  # Keras' fit does not run across workers (keras_rnnlm.multiworker)
            return fit_across_workers(
                trainer, strategy, data.train(first * steps_per_epoch + steps_done), data.valid, epochs=last,
                initial_epoch=first, steps_per_epoch=steps_per_epoch - steps_done, callbacks=callbacks,
                verbose=_progress(verbose) if chief else 0,
            ).get("loss", [])
        return trainer.fit(
            data.train(first * steps_per_epoch + steps_done),  # every batch from there on, endlessly
            steps_per_epoch=steps_per_epoch - steps_done,
            initial_epoch=first,
            validation_data=data.valid,
            epochs=last,
            callbacks=callbacks,
            shuffle=False,  # The dataset orders itself: windows shuffled with the run's seed, lanes in order.
            verbose=_progress(verbose),
        ).history.get("loss", [])

    losses = []
    if step:  # the rest of the epoch a killed run was inside, then the others
        trainer.test_on_batch(*next(iter(data.train(0))))  # builds the metrics the backup restores
        losses = fit(first_epoch, step, first_epoch + 1)
        first_epoch += 1
    if not getattr(trainer, "stop_training", False) and first_epoch < config.train.epochs:  # early stopping may have ended it
        losses += fit(first_epoch)
    if not chief:
        return {"worker": worker_index(), "epochs_trained": len(losses)}
    if losses and not math.isfinite(losses[-1]):  # TerminateOnNaN stopped it.
        _stop_after_nan(run)

    rows = [row for row in read_history(run.history) if math.isfinite(row["val_loss"])]
    if not rows:
        raise RnnlmError(f"training wrote no finite validation loss to {run.history}; lower train.learning_rate")
    best = min(rows, key=lambda row: row["val_loss"])
    summary = {
        "vocabulary_size": len(vocabulary),
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


def _read_corpus(config: Config, run: RunFolder, state: str) -> tuple[Vocabulary, Segments, Segments]:
    """The vocabulary and the training and validation text, from a prepared corpus when
    ``corpus.paths`` names one, else read and tokenized now. A resumed run keeps the
    vocabulary it started with.

    Raises:
        RnnlmError: Unreadable text; a prepared corpus damaged, prepared with other
            settings, or whose vocabulary is not the resumed run's.
    """
    if prepared_path := prepared_corpus_path(config):
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
    train_segments, valid_segments, vocabulary = corpus_segments(
        config, documents, None if state == NEW else Vocabulary.load(run.vocabulary)
    )
    return vocabulary, Segments.from_arrays(train_segments), Segments.from_arrays(valid_segments)


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


def _check_across_workers(config: Config, workers: int, replicas: int) -> None:
    """Refuses settings that training across workers does not support.

    Raises:
        RnnlmError: A batch that does not divide among the replicas (every worker's
            devices), or backups inside epochs.
    """
    if config.data.batch_size % replicas:
        devices = "" if replicas == workers else f" ({workers} workers, {replicas // workers} devices each)"
        raise RnnlmError(
            f"data.batch_size = {config.data.batch_size} does not divide among {replicas} replicas{devices}; set it to a "
            f"multiple of {replicas} (each device reads batch_size / {replicas} windows a step)"
        )
    if config.train.backup_every_steps:
        raise RnnlmError("train.backup_every_steps must be 0 across workers: a run resumes from its last epoch's backup")


def _callbacks(
    config: Config, run: RunFolder, model: keras.Model, rows, generator: Generator, opening: str
) -> list[keras.callbacks.Callback]:
    """The run's callbacks, but for the backup. Perplexity and the schedule (which logs the
    learning rate) come before everything that logs; the output ``rows`` the training
    model reads, if any, are copied into the model's kernel before it is saved or writes."""
    train = config.train
    callbacks = [
        Perplexity(),
        *([ResetStates()] if config.data.mode == "bptt" else []),
        *([OutputKernel(model, rows)] if rows is not None else []),
        keras.callbacks.TerminateOnNaN(),
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
        CurvesPlot(run.history, run.curves, "train (sampled softmax)" if config.model.softmax == "sampled" else "train"),
    ]
    if train.tensorboard:
        # No model graph: Keras 3 writes it as the training model's JSON, which its speed paths do not serialize.
        callbacks.append(keras.callbacks.TensorBoard(str(run.logs), write_graph=False))
    if train.sample_length:
        # A line-mode sample is a few independent lines (names), each started afresh.
        opening = "" if generator.line_mode else opening
        callbacks.append(
            SampleText(
                generator, train.sample_prompt or opening, train.sample_length, train.sample_temperature, train.seed,
                num_samples=5 if generator.line_mode else 1,
            )
        )
    return callbacks


def _stop_after_nan(run: RunFolder) -> None:
    # The backup holds the diverged weights; resuming from it would only diverge again.
    shutil.rmtree(run.backup, ignore_errors=True)
    epoch = len(read_history(run.history))  # CSVLogger has written the diverged epoch too.
    kept = f"the best model so far is kept in {run.model}" if run.model.is_file() else "no model was saved"
    raise RnnlmError(
        f"the training loss became NaN (or infinite) in epoch {epoch}, so training stopped; {kept}; "
        "lower train.learning_rate or set train.clipnorm, then train again with --overwrite"
    )


def _read_summary(run: RunFolder) -> dict:
    return json.loads(run.summary.read_text(encoding="utf-8"))


def _names(documents) -> str:
    names = [document.name for document in documents]
    return ", ".join(names) if len(names) <= 5 else f"{', '.join(names[:4])}, ... {names[-1]}"


def _progress(verbose: int | str) -> int:
    if verbose != "auto":
        return int(verbose)
    return 1 if sys.stdout.isatty() else 2  # A bar on a terminal; one line an epoch in a log.
