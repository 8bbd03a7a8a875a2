"""Scoring a trained run on new text: ``python -m keras_rnnlm.evaluate``.

The text is tokenized exactly as in training. A windows-mode model predicts every
token, line breaks included, from the ``window_size`` tokens before it, the text read as
one left-padded stream (each line on its own in line mode). A bptt-mode model reads the
text in order, its state carried from token to token, in :data:`EVALUATION_LANES` lanes
side by side as the PyTorch word-language-model example scores its validation and test
text (each lane starts from zero state), so its figure compares with published
WikiText-2 and Penn Treebank numbers; every token is predicted once.

With ``--cache`` a bptt run is also scored with its continuous cache
(:mod:`keras_rnnlm.cache`), whose settings a bptt run fits on its validation text when it
finishes, or ``--fit-cache`` fits on the text given. With ``--dynamic`` it is also scored
by dynamic evaluation (:mod:`keras_rnnlm.dynamic`: the model goes on learning from the
text it has scored), whose settings ``--fit-dynamic`` fits on the (validation) text given;
with both, the dynamic pass is also scored with the cache mixed in.

Example:
    python -m keras_rnnlm.evaluate --model saved_models/psalms --text my_psalm.txt
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m keras_rnnlm.evaluate: the arguments are checked before TensorFlow loads
    import sys

    from keras_rnnlm import cli

    sys.exit(cli.main("evaluate"))

import argparse
import math
from pathlib import Path

import keras
import tensorflow as tf

from keras_rnnlm.cache import cache_scores, fit_cache
from keras_rnnlm.config import Config
from keras_rnnlm.corpus import find_documents
from keras_rnnlm.data import EVALUATION_LANES, Lanes, lanes, lanes_dataset, windowed_stream, windows_dataset
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.model import carried_state_model, make_metrics
from keras_rnnlm.dynamic import dynamic_scores, fit_dynamic
from keras_rnnlm.runs import CacheSettings, DynamicSettings, RunFolder
from keras_rnnlm.splits import segments_for_evaluation
from keras_rnnlm.vocab import encode_documents


def evaluate(run_dir: str | Path, text_paths: list[str | Path], batch_size: int = 256, cache: bool = False,
             dynamic: bool = False) -> dict:
    """Scores a run's model on text files.

    Args:
        run_dir: A run folder written by ``python -m keras_rnnlm.train``.
        text_paths: Files or folders of ``.txt`` files to score.
        batch_size: Windows per step (windows mode). Defaults to 256.
        cache: Bptt mode: also score with the run's fitted continuous cache
            (:mod:`keras_rnnlm.cache`).
        dynamic: Bptt mode: also score by dynamic evaluation with the run's fitted
            settings (:mod:`keras_rnnlm.dynamic`).

    Returns:
        ``tokens``, ``cross_entropy`` (nats per token: per character for a character
        model), ``bits_per_token``, ``perplexity``, ``accuracy``, ``level`` and ``scoring``
        (how the tokens were read, in words); with ``cache``, also ``cache`` (its
        settings, in words), ``cache_cross_entropy`` and ``cache_perplexity``; with
        ``dynamic``, ``dynamic`` (its settings), ``dynamic_cross_entropy`` and
        ``dynamic_perplexity``; with both, also ``dynamic_cache`` (the settings of the
        cache mixed into the dynamic pass: those fitted with it, else the run's),
        ``dynamic_cache_cross_entropy`` and ``dynamic_cache_perplexity``.

    Raises:
        RnnlmError: The run folder or a text file is missing or unreadable; with
            ``cache`` or ``dynamic``, the run has no fitted settings for it.
    """
    run = RunFolder(run_dir)
    cache_settings = CacheSettings.load(run.path) if cache else None
    dynamic_settings = DynamicSettings.load(run.path) if dynamic else None
    config, model, segments = _read(run, text_paths)
    scores = score(model, config, segments, batch_size, cache_settings)
    if dynamic_settings is not None:
        # learning rate 0: fitted as off, the static scores stand
        cross_entropy, with_cache = scores["cross_entropy"], scores.get("cache_cross_entropy")
        mixed = cache_settings and (dynamic_settings.cache() or cache_settings)  # the cache fitted on the dynamic pass, if any
        if dynamic_settings.learning_rate:
            text = lanes(segments, EVALUATION_LANES, config.data.bptt_steps)
            cross_entropy, _, with_cache = dynamic_scores(model, text, dynamic_settings, config.model.memory, mixed)
        scores.update(dynamic=dynamic_settings.describe(), dynamic_cross_entropy=cross_entropy,
                      dynamic_perplexity=math.exp(min(cross_entropy, 700.0)))
        if cache_settings is not None:
            scores.update(dynamic_cache=mixed.describe(), dynamic_cache_cross_entropy=with_cache,
                          dynamic_cache_perplexity=math.exp(min(with_cache, 700.0)))
    return scores


def fit_run_cache(run_dir: str | Path, text_paths: list[str | Path]) -> CacheSettings:
    """Fits a bptt run's continuous cache on validation text and keeps the settings in
    the run folder (``cache.json``), where ``evaluate --cache`` reads them.

    Raises:
        RnnlmError: As :func:`evaluate`.
    """
    run = RunFolder(run_dir)
    config, model, segments = _read(run, text_paths)
    settings = fit_cache(model, lanes(segments, EVALUATION_LANES, config.data.bptt_steps), config.model.memory)
    settings.save(run.path)
    return settings


def fit_run_dynamic(run_dir: str | Path, text_paths: list[str | Path]) -> DynamicSettings:
    """Fits a bptt run's dynamic evaluation on validation text (a pass per setting of
    :data:`keras_rnnlm.dynamic.LEARNING_RATES` and ``DECAYS``) and keeps the settings
    in the run folder (``dynamic.json``), where ``evaluate --dynamic`` reads them.

    Raises:
        RnnlmError: As :func:`evaluate`.
    """
    run = RunFolder(run_dir)
    config, model, segments = _read(run, text_paths)
    text = lanes(segments, EVALUATION_LANES, config.data.bptt_steps)
    _, without, _ = score_lanes(model, text, config.model.memory)
    settings = fit_dynamic(model, text, without, config.model.memory)
    settings.save(run.path)
    return settings


def _read(run: RunFolder, text_paths):
    """The run's config and model, and the text encoded as the run was trained."""
    config, vocabulary, tokenizer, model = run.load()
    encoded = encode_documents(find_documents(text_paths), tokenizer, vocabulary)
    segments = segments_for_evaluation(encoded, config.corpus.sequences)
    if segments.num_tokens == 0:
        raise RnnlmError("the text has no tokens to evaluate; give a file with some text in it")
    return config, model, segments


def score(model: keras.Model, config: Config, segments, batch_size: int = 256, cache: CacheSettings | None = None) -> dict:
    """Scores a model on encoded text, each mode its way (see the module docstring).

    Args:
        model: The run's model.
        config: The run's config.
        segments: The text: documents, or lines in line mode (:func:`~keras_rnnlm.splits.segments_for_evaluation`).
        batch_size: Windows per step (windows mode).
        cache: Bptt mode: also score with these cache settings, in the same pass.

    Returns:
        As :func:`evaluate`.
    """
    with_cache = {}
    if config.data.mode == "bptt":
        text = lanes(segments, EVALUATION_LANES, config.data.bptt_steps)
        if cache is None:
            tokens, cross_entropy, accuracy = score_lanes(model, text, config.model.memory)
        else:
            tokens = text.num_targets
            cross_entropy, cached, accuracy = cache_scores(model, text, cache, config.model.memory)
            with_cache = {"cache": cache.describe(), "cache_cross_entropy": cached, "cache_perplexity": math.exp(cached)}
        scoring = (f"in order, {text.num_lanes} lanes side by side, the state carried token to token "
                   f"({config.data.bptt_steps} a step)")
    else:
        tokens, cross_entropy, accuracy = _score_windows(model, config, segments, batch_size)
        scoring = f"each token from the {config.data.window_size} before it"
    return {
        "tokens": tokens,
        "cross_entropy": cross_entropy,
        "bits_per_token": cross_entropy / math.log(2),
        "perplexity": math.exp(cross_entropy),
        "accuracy": accuracy,
        "level": config.corpus.level,
        "scoring": scoring,
        **with_cache,
    }


def _score_windows(model: keras.Model, config: Config, segments, batch_size: int) -> tuple[int, float, float]:
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(), weighted_metrics=make_metrics())  # Keras' own
    stream = windowed_stream(segments, config.data.window_size)
    # Keras weights each batch's mean loss by its size, so this is the mean over all tokens.
    scores = model.evaluate(windows_dataset(stream, batch_size), return_dict=True, verbose=0)
    return stream.num_windows, scores["loss"], scores["accuracy"]


def score_lanes(model: keras.Model, text: Lanes, attention_memory: int = 0) -> tuple[int, float, float]:
    """Reads the lanes in order, each from zero state, the state carried from step to step.

    Args:
        model: A bptt-mode model (:func:`keras_rnnlm.model.build_model` without a window).
        text: The text in lanes; padding targets count for nothing.
        attention_memory: A model with attention: outputs each lane remembers.

    Returns:
        (tokens scored, mean cross-entropy in nats, accuracy), summed over every target
        exactly, not averaged per step.
    """
    reader = carried_state_model(model, text.num_lanes, text.bptt_steps, attention_memory)

    @tf.function
    def sums(inputs, targets, weights):  # (lanes, steps) each
        logits = reader(inputs, training=False)  # (lanes, steps, vocabulary), float32
        cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
        correct = tf.reshape(tf.math.in_top_k(tf.reshape(targets, [-1]), tf.reshape(logits, [-1, logits.shape[-1]]), 1), tf.shape(targets))
        return tf.reduce_sum(cross_entropy * weights), tf.reduce_sum(tf.cast(correct, tf.float32) * weights)

    total_cross_entropy, total_correct = 0.0, 0.0
    for inputs, targets, weights in lanes_dataset(text):
        cross_entropy, correct = sums(inputs, targets, weights)
        total_cross_entropy += float(cross_entropy)
        total_correct += float(correct)
    return text.num_targets, total_cross_entropy / text.num_targets, total_correct / text.num_targets


def main(args: argparse.Namespace) -> int:
    """``python -m keras_rnnlm.evaluate``, its arguments checked (:func:`keras_rnnlm.arguments.evaluate`)."""
    if args.fit_cache or args.fit_dynamic:
        settings = fit_run_cache(args.model, args.text) if args.fit_cache else fit_run_dynamic(args.model, args.text)
        print(f"{settings.WHAT} fitted: {settings.describe()} (kept in {Path(args.model) / settings.FILE})")
        print(f"perplexity:       {math.exp(settings.valid_cross_entropy_without):.2f} without it, "
              f"{math.exp(settings.valid_cross_entropy):.2f} with it")
        if args.fit_dynamic and settings.cache():
            print(f"with the cache:   {math.exp(settings.valid_cross_entropy_with_cache):.2f} "
                  f"({settings.cache().describe()}, fitted on the dynamic pass: evaluate --dynamic --cache)")
        return 0
    scores = evaluate(args.model, args.text, args.batch_size, cache=args.cache, dynamic=args.dynamic)
    unit = "character" if scores["level"] == "char" else "token"
    print(f"{unit}s evaluated: {scores['tokens']:,} ({scores['scoring']})")
    print(f"cross-entropy:    {scores['cross_entropy']:.4f} nats/{unit} ({scores['bits_per_token']:.4f} bits/{unit})")
    print(f"perplexity:       {scores['perplexity']:.2f}")
    print(f"accuracy:         {scores['accuracy']:.4f}")
    if args.cache:
        print(f"with the cache:   {scores['cache_cross_entropy']:.4f} nats/{unit}, perplexity "
              f"{scores['cache_perplexity']:.2f} ({scores['cache']})")
    if args.dynamic:
        print(f"dynamic:          {scores['dynamic_cross_entropy']:.4f} nats/{unit}, perplexity "
              f"{scores['dynamic_perplexity']:.2f} ({scores['dynamic']})")
    if args.cache and args.dynamic:
        print(f"dynamic + cache:  {scores['dynamic_cache_cross_entropy']:.4f} nats/{unit}, perplexity "
              f"{scores['dynamic_cache_perplexity']:.2f} ({scores['dynamic_cache']})")
    return 0
