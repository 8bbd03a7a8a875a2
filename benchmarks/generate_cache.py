"""Does the continuous cache write better text? The judgement behind ``generate --cache``.

Takes a trained bptt-mode run with its fitted cache (``cache.json``) and a text it has not
trained on (by default the run's own validation text, which the cache's settings were
fitted on). From ``--prompts`` evenly spaced places in the text, each prompt the
``--context`` tokens before it, writes ``--words`` tokens with and without the cache
(the same seeds, temperature 1: each model's own distribution) and compares both with the
text's real continuation:

- held-out likelihood: the real continuation's perplexity after the prompt, read through
  the generation steps themselves (the cache filled by the prompt, as when writing);
- repetition: the share of tokens that already occur among the 50 tokens before them
  (the prompt included). The real continuation's share is the reference: a sampler that
  repeats more than the text does loops, one that repeats less forgets its topic;
- distinct tokens per sample, and one sample of each for reading.

Usage (from the project root):
    python benchmarks/generate_cache.py --model saved_models/psalms_bptt [--text held_out.txt]
        [--prompts 64] [--context 100] [--words 50] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keras_rnnlm.corpus import corpus_documents  # noqa: E402
from keras_rnnlm.generate import Generator  # noqa: E402
from keras_rnnlm.inference import cached_steps  # noqa: E402
from keras_rnnlm.runs import CacheSettings, RunFolder  # noqa: E402
from keras_rnnlm.splits import corpus_segments  # noqa: E402
from keras_rnnlm.vocab import LINE_BREAK_ID, PAD_ID  # noqa: E402

LOOKBACK = 50  # tokens before a token in which a repeat counts


def repetition(context: np.ndarray, written: np.ndarray) -> float:
    """The share of ``written`` tokens found among the LOOKBACK tokens before each."""
    text = np.concatenate([context, written])
    start = len(context)
    return float(np.mean([text[index] in text[max(0, index - LOOKBACK):index] for index in range(start, len(text))]))


def continuation_perplexity(generator: Generator, windows: np.ndarray, continuations: np.ndarray,
                            cache: CacheSettings | None) -> float:
    """The perplexity of ``continuations`` (batch, words) after ``windows``, read token by
    token through the generation steps (with the cache, if given)."""
    steps = generator.logits.prepare()
    if cache is not None:
        steps = cached_steps(steps, cache)
    logits, advance = tf.function(steps.logits), tf.function(steps.advance)
    state, total = tf.function(steps.start)(tf.constant(windows)), 0.0
    for position in range(continuations.shape[1]):
        targets = continuations[:, position]
        log_probabilities = tf.nn.log_softmax(logits(state)).numpy()
        total -= log_probabilities[np.arange(len(targets)), targets].sum()
        state = advance(state, tf.constant(targets))
    return math.exp(total / continuations.size)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a bptt-mode run folder with cache.json")
    parser.add_argument("--text", help="held-out text the run did not train on (default: the run's validation text)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--context", type=int, default=100, help="tokens of each prompt")
    parser.add_argument("--words", type=int, default=50, help="tokens written after each prompt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    settings = CacheSettings.load(args.model)
    plain, cached = Generator.from_run(args.model), Generator.from_run(args.model, cache=True)
    if plain.window_size is not None:
        print(f"{args.model} is a windows-mode run: the cache needs a bptt-mode run", file=sys.stderr)
        return 2
    if args.text:
        text = Path(args.text).read_text(encoding="utf-8")
        ids = plain.vocabulary.ids_from_tokens(plain.tokenizer.tokens_from_text(text))
    else:
        config = RunFolder(args.model).load()[0]
        _, held_out, _ = corpus_segments(config, corpus_documents(config.corpus.paths, config.corpus.builtin), plain.vocabulary)
        ids, args.text = np.asarray(held_out.tokens), "the run's validation text"
    span = args.context + args.words
    if len(ids) < span + args.prompts:
        print(f"{args.text} has {len(ids):,} tokens: too few for {args.prompts} prompts of {span}", file=sys.stderr)
        return 2
    starts = np.linspace(0, len(ids) - span, args.prompts).astype(int)
    contexts = np.stack([ids[start:start + args.context] for start in starts]).astype(np.int32)
    windows = np.concatenate([np.full((args.prompts, 1), LINE_BREAK_ID, np.int32), contexts], axis=1)
    real = np.stack([ids[start + args.context:start + span] for start in starts]).astype(np.int32)

    print(f"{args.model}: cache of {settings.size} states, theta {settings.theta:g}, lambda {settings.lam:g}; "
          f"{args.prompts} prompts of {args.context} tokens from {args.text}, {args.words} tokens written after each")
    rows = {"real continuation": real}
    for name, generator in (("without the cache", plain), ("with the cache", cached)):
        rows[name] = generator.generate_ids(
            tf.constant(windows), tf.constant(args.words), tf.constant(1.0), tf.constant(0), tf.constant(1.0),
            tf.constant(args.seed), tf.constant(0),
        ).numpy()
    for name, written in rows.items():
        repeats = np.mean([repetition(context, row[row != PAD_ID]) for context, row in zip(contexts, written)])
        distinct = np.mean([len(set(row[row != PAD_ID].tolist())) for row in written])
        print(f"{name:>18}: repetition {repeats:.1%} of tokens within the {LOOKBACK} before, "
              f"{distinct:.1f} distinct tokens of {args.words}")
    print(f"real continuation's perplexity after the prompt: without the cache "
          f"{continuation_perplexity(plain, windows, real, None):.2f}, with it "
          f"{continuation_perplexity(plain, windows, real, settings):.2f}")
    for name in ("without the cache", "with the cache"):
        sample = rows[name][0]
        print(f"--- sample {name} (prompt 1):\n"
              f"{plain.tokenizer.text_from_tokens(plain.vocabulary.tokens_from_ids(sample[sample != PAD_ID]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
