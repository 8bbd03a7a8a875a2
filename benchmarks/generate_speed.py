"""Generation speed: keras_rnnlm's compiled loop vs calling model.predict once per token.

The default architecture (vocabulary 10,000, embedding 128, one LSTM of 256, window 5),
randomly initialised (speed does not depend on the weights). Measures tokens per second
of the compiled loop at batch 1 and batch 64, and of the naive loop (the TensorFlow
tutorials' and textgenrnn's way: ``model.predict`` on one window, sample in NumPy,
slide, repeat), interleaved in one run so machine noise hits all alike; reports medians.

Usage:
    python benchmarks/generate_speed.py [--repeats 5] [--tokens 2000] [--parts 1 2] [--mode windows|bptt]
        [--attention-memory 512] [--layer-norm]

``--mode bptt`` times a bptt run's model, which reads the prompt and carries its state
through every token (one recurrent step a token); its naive loop calls ``model.predict``
on the whole text so far.

``--mode bptt --attention-memory 512`` also times, interleaved, the same model with the
attention block of ``model.attention`` reading a memory of that many outputs (one
attention read a token), and ``--layer-norm`` with ``model.layer_norm``; each against the
plain model in the same run.

``--parts`` times the compiled loop with a batch written in each number of independent
parts (keras_rnnlm.generate.PARTS); the first is the one compared with the naive loop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_rnnlm.config import ModelConfig  # noqa: E402
from keras_rnnlm.generate import PARTS, Generator  # noqa: E402
from keras_rnnlm.model import build_model  # noqa: E402
from keras_rnnlm.tokenizer import Tokenizer  # noqa: E402
from keras_rnnlm.vocab import LINE_BREAK_ID, PAD_ID, Vocabulary  # noqa: E402

VOCABULARY_SIZE, WINDOW_SIZE = 10_000, 5


def naive_tokens_per_second(model, num_tokens: int, rng, bptt: bool) -> float:
    """``model.predict`` once per token: on the last window, or for a bptt model on the
    whole text so far (a stateless model's way to carry the context)."""
    ids = np.full((1, 1 if bptt else WINDOW_SIZE), LINE_BREAK_ID if bptt else PAD_ID, np.int32)
    started = time.perf_counter()
    for _ in range(num_tokens):
        probabilities = model.predict(ids, verbose=0)[0]
        probabilities = (probabilities[-1] if bptt else probabilities).astype(np.float64)
        next_id = rng.choice(VOCABULARY_SIZE, p=probabilities / probabilities.sum())
        ids = np.concatenate([ids if bptt else ids[:, 1:], [[next_id]]], axis=1)
    return num_tokens / (time.perf_counter() - started)


def compiled_tokens_per_second(generator: Generator, batch_size: int, num_tokens: int, seed: int) -> float:
    windows = tf.fill((batch_size, generator.window_size or 1), PAD_ID if generator.window_size else LINE_BREAK_ID)
    started = time.perf_counter()
    ids = generator.generate_ids(windows, num_tokens, 1.0, 0, 1.0, seed, 0).numpy()
    elapsed = time.perf_counter() - started
    assert ids.shape == (batch_size, num_tokens)
    return batch_size * num_tokens / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=2000, help="tokens per sample for the compiled loop")
    parser.add_argument("--naive-tokens", type=int, default=40, help="tokens for the naive loop")
    parser.add_argument("--parts", type=int, nargs="+", default=[PARTS], help=f"batch parts to time (default: {PARTS})")
    parser.add_argument("--mode", choices=("windows", "bptt"), default="windows",
                        help="the model of a windows run, or of a bptt run (reads whole texts, its state carried)")
    parser.add_argument("--attention-memory", type=int, default=0,
                        help="bptt mode: also time the model with attention over a memory of this many outputs")
    parser.add_argument("--layer-norm", action="store_true", help="bptt mode: also time the model with layer normalization")
    args = parser.parse_args()
    bptt = args.mode == "bptt"

    keras.utils.set_random_seed(0)
    window_size = None if bptt else WINDOW_SIZE
    model = build_model(ModelConfig(), window_size, VOCABULARY_SIZE)
    vocabulary = Vocabulary(["<pad>", "<unk>", "<eol>"] + [f"w{i}" for i in range(VOCABULARY_SIZE - 3)])
    generators = {("", parts): Generator(model, vocabulary, Tokenizer(), window_size, parts=parts) for parts in args.parts}
    variants = {}
    if args.attention_memory:
        variants[f"attention {args.attention_memory}, "] = ModelConfig(attention=True, attention_memory=args.attention_memory)
    if args.layer_norm:
        variants["layer norm, "] = ModelConfig(layer_norm=True)
    for name, config in variants.items():  # the first parts setting only
        generators[(name, args.parts[0])] = Generator(build_model(config, window_size, VOCABULARY_SIZE), vocabulary, Tokenizer(),
                                                      window_size, parts=args.parts[0], attention_memory=config.memory)
    rng = np.random.default_rng(0)

    # Warm-up: trace the compiled loops and let predict build its function.
    for generator in generators.values():
        compiled_tokens_per_second(generator, 1, 10, 0)
    naive_tokens_per_second(model, 3, rng, bptt)

    results = {"naive": []}
    for repeat in range(args.repeats):
        results["naive"].append(naive_tokens_per_second(model, args.naive_tokens, rng, bptt))
        for (name, parts), generator in generators.items():
            results.setdefault(f"{name}batch 1, {parts} parts", []).append(compiled_tokens_per_second(generator, 1, args.tokens, repeat))
            results.setdefault(f"{name}batch 64, {parts} parts", []).append(
                compiled_tokens_per_second(generator, 64, max(args.tokens // 4, 1), repeat)
            )

    medians = {name: statistics.median(values) for name, values in results.items()}
    print(f"vocabulary {VOCABULARY_SIZE:,}, LSTM {ModelConfig().units}, {args.mode} mode; "
          f"{args.repeats} repeats, medians; {os.cpu_count()} CPUs; TensorFlow {tf.__version__}")
    for name, value in medians.items():
        print(f"{name:>34}: {value:10,.0f} tokens/s")
    first = args.parts[0]
    for batch in (1, 64):
        print(f"batch {batch} vs naive: {medians[f'batch {batch}, {first} parts'] / medians['naive']:.0f}x")
        for name in variants:
            print(f"{name}batch {batch} vs the plain model: "
                  f"{medians[f'{name}batch {batch}, {first} parts'] / medians[f'batch {batch}, {first} parts']:.2f}x")
    print(json.dumps({"tokens_per_second": medians, "runs": results}))


if __name__ == "__main__":
    main()
