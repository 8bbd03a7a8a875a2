"""Writing text with a trained model: ``python -m keras_rnnlm.generate``.

The prompt is tokenized as in training. A windows-mode model reads its last
``window_size`` ids (left-padded like the start of a file); a bptt-mode model reads all
of it, after a line break as its training text began, and carries its recurrent state
through every token it writes. Then :func:`generate_ids`, one compiled
``tf.function`` (a ``tf.while_loop``), writes every sample of a batch at once: each step
takes the next token's logits (:mod:`keras_rnnlm.inference`: the model's own numbers,
with fewer ops), chooses a token (:mod:`keras_rnnlm.sampling`) and reads it in. Random
draws are stateless and seeded: the same model, prompt, settings and seed give the same
text. It never calls ``model.predict`` once per token. Padding and ``<unk>`` are never
generated.

Example:
    >>> generator = Generator.from_run("saved_models/psalms")
    >>> generator.generate(["the lord is my"], num_tokens=20, sampling=Sampling.from_strategy("top_k"), seed=1)
    ['the lord is my strength and my song, ...']

    python -m keras_rnnlm.generate --prompt "the lord is my" --words 50 --strategy top_p --top-p 0.9
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m keras_rnnlm.generate: the arguments are checked before TensorFlow loads
    import sys

    from keras_rnnlm import cli

    sys.exit(cli.main("generate"))

import argparse
import logging
import sys
from pathlib import Path
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from keras_rnnlm.arguments import check_text
from keras_rnnlm.errors import printable
from keras_rnnlm.inference import NextTokenLogits, cached_steps
from keras_rnnlm.runs import CacheSettings, RunFolder
from keras_rnnlm.sampling import Sampling, check_generation, next_ids
from keras_rnnlm.tokenizer import Tokenizer
from keras_rnnlm.vocab import LINE_BREAK_ID, PAD_ID, UNK_ID, Vocabulary

logger = logging.getLogger("keras_rnnlm")

# A batch can be written in several independent parts (rows split evenly): each part is
# its own chain of small ops, and TensorFlow's executor runs independent chains side by
# side, one a core. On the 2-core Intel Xeon two parts wrote a batch of 64 faster; on the
# 2-core AMD EPYC they did not, and slowed batch 1 (benchmarks/generate_speed.py
# --parts 1 2; figures in benchmarks/RESULTS.md). So one part by default. On more cores
# more parts may pay; that is not measured.
PARTS = 1
# Tokens Generator.stream computes per call: each call costs about 2 ms of Python and
# TensorFlow dispatch, several times a token's own work at batch 1 (benchmarks/serve_load.py
# against benchmarks/web_speed.py's Generator.generate; figures in benchmarks/RESULTS.md).
STREAM_CHUNK = 8


class Generator:
    """Continues prompts with a trained model.

    Args:
        model: Maps int32 windows (batch, window_size) to probabilities (batch,
            vocabulary_size); or, a bptt-mode model, int32 sequences (batch, time) to
            probabilities (batch, time, vocabulary_size).
        vocabulary: The vocabulary the model was trained with.
        tokenizer: The tokenizer the model was trained with.
        window_size: Tokens of context the model reads; None for a bptt-mode model,
            which reads the whole prompt.
        line_mode: The model was trained on independent lines (``corpus.sequences =
            "lines"``): a prompt starts a line and a sample ends at its line break.
        parts: Independent parts a batch is written in (see :func:`generate_ids`).
            Defaults to :data:`PARTS`.
        cache: A bptt-mode model's continuous cache settings: draw each token from the
            model's distribution mixed with the cache's (:func:`keras_rnnlm.inference.cached_steps`).
        attention_memory: A model with attention: outputs it remembers (``model.attention_memory``).
    """

    def __init__(self, model, vocabulary: Vocabulary, tokenizer: Tokenizer, window_size: int | None, line_mode: bool = False,
                 parts: int = PARTS, cache: CacheSettings | None = None, attention_memory: int = 0):
        self.model = model
        self.vocabulary = vocabulary
        self.tokenizer = tokenizer
        self.window_size = window_size
        self.line_mode = line_mode
        self.logits = NextTokenLogits(model, len(vocabulary), banned_ids=[PAD_ID, UNK_ID], attention_memory=attention_memory)
        self.cache = cache
        self._stepper = None  # stream's compiled functions, made at its first call

        @tf.function(input_signature=[tf.TensorSpec([None, window_size], tf.int32, name="windows")])
        def next_probabilities(windows):  # (batch, vocabulary): the Keras model's softmax after each window
            probabilities = tf.cast(model(windows, training=False), tf.float32)
            return probabilities if window_size else probabilities[:, -1]  # a bptt model predicts after every token

        self.next_probabilities = next_probabilities

        # An explicit signature: one trace serves every batch size and setting, and the
        # same function can be exported in a SavedModel.
        @tf.function(input_signature=[
            tf.TensorSpec([None, window_size], tf.int32, name="windows"),
            tf.TensorSpec([], tf.int32, name="num_tokens"),
            tf.TensorSpec([], tf.float32, name="temperature"),
            tf.TensorSpec([], tf.int32, name="top_k"),
            tf.TensorSpec([], tf.float32, name="top_p"),
            tf.TensorSpec([], tf.int32, name="seed"),
            tf.TensorSpec([], tf.int32, name="max_lines"),
        ])
        def compiled_generate_ids(windows, num_tokens, temperature, top_k, top_p, seed, max_lines):
            return generate_ids(self.logits, windows, num_tokens, temperature, top_k, top_p, seed, max_lines, parts, cache)

        self.generate_ids = compiled_generate_ids

    @classmethod
    def from_run(cls, run_dir: str | Path, cache: bool = False) -> Generator:
        """Loads the model, vocabulary and tokenizer of a run folder; with ``cache``, the
        continuous cache a bptt run fitted too.

        Raises:
            RnnlmError: The folder is missing or not a keras_rnnlm run, or ``cache`` and
                the run has none.
        """
        config, vocabulary, tokenizer, model = RunFolder(run_dir).load()
        window_size = config.data.window_size if config.data.mode == "windows" else None
        return cls(model, vocabulary, tokenizer, window_size, line_mode=config.corpus.sequences == "lines",
                   cache=CacheSettings.load(run_dir) if cache else None, attention_memory=config.model.memory)

    def windows_from_prompts(self, prompts: list[str]) -> np.ndarray:
        """Tokenizes prompts as in training: the last ``window_size`` ids of each, or for
        a bptt-mode model all of them after a line break; left-padded to a common length.

        Returns:
            int32 (len(prompts), window_size), or (len(prompts), longest prompt + 1).
        """
        tokenized = [self.vocabulary.ids_from_tokens(self.tokenizer.tokens_from_text(prompt)) for prompt in prompts]
        if self.window_size is None:
            tokenized = [np.concatenate([[LINE_BREAK_ID], ids]) for ids in tokenized]
        width = self.window_size or max(map(len, tokenized), default=1)
        windows = np.full((len(prompts), width), PAD_ID, dtype=np.int32)
        for row, ids in enumerate(tokenized):
            ids = ids[len(ids) - min(len(ids), width) :]
            windows[row, width - len(ids) :] = ids
        return windows

    def unknown_words(self, prompt: str) -> list[str]:
        """The prompt's tokens that are not in the vocabulary (read as ``<unk>``)."""
        return [token for token in self.tokenizer.tokens_from_text(prompt) if self.vocabulary.id_from_token(token) == UNK_ID]

    def generate(
        self,
        prompts: list[str],
        num_tokens: int,
        sampling: Sampling = Sampling(),
        seed: int = 0,
        max_lines: int | None = None,
    ) -> list[str]:
        """Continues each prompt, all prompts in one batch.

        Args:
            prompts: Texts to continue; an empty prompt starts as a file does.
            num_tokens: Most tokens (words, punctuation, line breaks; or characters) to add.
            sampling: How each token is chosen. Defaults to ``Sampling()``: the model's
                own distribution (temperature 1).
            seed: Same seed, same text. Defaults to 0.
            max_lines: Stop a sample after this many line breaks; 0 never stops early.
                Defaults to None: 1 for a line-mode model (one name or sentence), else 0.

        Returns:
            Each prompt (as tokenized) followed by its continuation, detokenized.

        Raises:
            RnnlmError: The token or line count is out of range.
        """
        check_generation(num_tokens, max_lines, seed)
        if max_lines is None:
            max_lines = 1 if self.line_mode else 0
        new_ids = self.generate_ids(
            tf.constant(self.windows_from_prompts(prompts)),
            tf.constant(num_tokens, tf.int32),
            tf.constant(sampling.temperature, tf.float32),
            tf.constant(sampling.top_k, tf.int32),
            tf.constant(sampling.top_p, tf.float32),
            tf.constant(seed, tf.int32),
            tf.constant(max_lines, tf.int32),
        ).numpy()
        return [self.text_from_ids(prompt, ids) for prompt, ids in zip(prompts, new_ids)]

    def stream(
        self, prompts: list[str], num_tokens: int, sampling: Sampling = Sampling(), seed: int = 0, max_lines: int | None = None,
    ) -> Iterator[np.ndarray]:
        """Writes what :meth:`generate` writes (the same tokens for the same settings and
        seed), one token at a time: a caller shows each as it comes, and stops when it likes.

        Yields:
            int32 (len(prompts),): the next token of each prompt; ``<pad>`` for a sample
            that stopped at its last line. Ends when every sample stopped, or after ``num_tokens``.

        Raises:
            RnnlmError: The token or line count is out of range.
        """
        check_generation(num_tokens, max_lines, seed)
        if max_lines is None:
            max_lines = 1 if self.line_mode else 0
        start, steps = self._stepper or self._compiled_steps()
        state = start(tf.constant(self.windows_from_prompts(prompts)))
        lines = np.zeros(len(prompts), np.int32)
        settings = [tf.constant(value, dtype) for value, dtype in ((sampling.temperature, tf.float32), (sampling.top_k, tf.int32),
                                                                   (sampling.top_p, tf.float32), (seed, tf.int32), (max_lines, tf.int32))]
        for index in range(0, num_tokens, STREAM_CHUNK):
            chunk, state = steps(state, tf.constant(lines), tf.constant(index), *settings)
            for ids in chunk.numpy()[: num_tokens - index]:
                yield ids
                lines += ids == LINE_BREAK_ID
                if max_lines and bool(np.all(lines >= max_lines)):
                    return

    def _compiled_steps(self):
        """stream's functions: the state after the prompts, and :data:`STREAM_CHUNK` steps
        of :func:`generate_ids`' loop (the same draws: token ``i`` from the seed ``(seed, i)``)."""
        steps = self.logits.prepare()  # what every step shares, computed once
        if self.cache is not None:
            steps = cached_steps(steps, self.cache)

        @tf.function(reduce_retracing=True)
        def chunk(state, lines, index, temperature, top_k, top_p, seed, max_lines):
            written = []
            for offset in range(STREAM_CHUNK):
                uniform = tf.random.stateless_uniform([tf.shape(lines)[0], 2], seed=tf.stack([seed, index + offset]))
                ids = next_ids(steps.logits(state), temperature, top_k, top_p, uniform)
                ids = tf.where((max_lines > 0) & (lines >= max_lines), PAD_ID, ids)
                state = steps.advance(state, ids)
                lines += tf.cast(ids == LINE_BREAK_ID, tf.int32)
                written.append(ids)
            return tf.stack(written), state  # (STREAM_CHUNK, batch)

        self._stepper = tf.function(steps.start, reduce_retracing=True), chunk
        return self._stepper

    def next_words(self, prompt: str, k: int) -> list[tuple[str, float]]:
        """The ``k`` likeliest next tokens after ``prompt`` and their probabilities (the
        model's softmax), ``<pad>`` and ``<unk>`` left out, as the exported ``next_words``."""
        probabilities = self.next_probabilities(tf.constant(self.windows_from_prompts([prompt]))).numpy()[0]
        probabilities[[PAD_ID, UNK_ID]] = -1.0
        best = np.argsort(-probabilities, kind="stable")[:k]
        return [(self.vocabulary.tokens[index], float(probabilities[index])) for index in best]

    def text_from_ids(self, prompt: str, ids: np.ndarray) -> str:
        """The prompt followed by the generated ids, detokenized; padding marks a sample that stopped."""
        tokens = self.vocabulary.tokens_from_ids(ids[ids != PAD_ID])
        return self.tokenizer.text_from_tokens(self.tokenizer.tokens_from_text(prompt) + tokens)


class LoopState(NamedTuple):
    """What the generation loop carries from one token to the next."""

    index: tf.Tensor  # int32 scalar: tokens written so far
    model_states: tuple  # each part's state of the next-token logits (inference.TokenSteps)
    lines: tf.Tensor  # int32 (batch,): line breaks written per sample
    generated: tf.TensorArray  # int32 (batch,) per token written


def generate_ids(next_token: NextTokenLogits, windows, num_tokens, temperature, top_k, top_p, seed, max_lines, parts=PARTS,
                 cache: CacheSettings | None = None):
    """Writes up to ``num_tokens`` tokens after each window (call inside a ``tf.function``).

    Args:
        next_token: The model's next-token logits.
        windows: int32 (batch, window_size), the prompts' last ids, left-padded; for a
            bptt-mode model (batch, time), whole prompts, left-padded.
        num_tokens: int32 scalar, most tokens to write.
        temperature, top_k, top_p: The :class:`~keras_rnnlm.sampling.Sampling` settings,
            as scalar tensors.
        seed: int32 scalar; token ``i`` of every sample draws from the seed ``(seed, i)``.
        max_lines: int32 scalar; a sample that wrote this many line breaks stops (0: none do).
        parts: The batch's rows are written in this many independent parts (:data:`PARTS`).
        cache: With settings, a bptt-mode model's tokens are drawn from its distribution
            mixed with the continuous cache's (:func:`keras_rnnlm.inference.cached_steps`).

    Returns:
        int32 (batch, steps), steps <= num_tokens; a sample that stopped is padded with
        ``<pad>`` from then on. The ids do not depend on ``parts``.
    """
    batch_size = tf.shape(windows)[0]
    steps = next_token.prepare()  # what every step shares, computed once per call
    if cache is not None:
        steps = cached_steps(steps, cache)
    bounds = [(batch_size * part) // parts for part in range(parts + 1)]

    def split(rows):  # the batch's rows in parts
        return [rows[start:end] for start, end in zip(bounds[:-1], bounds[1:])]

    def step(state: LoopState) -> LoopState:
        uniform = tf.random.stateless_uniform([batch_size, 2], seed=tf.stack([seed, state.index]))  # (batch, 2)
        ids = tf.concat(
            [
                next_ids(steps.logits(model_state), temperature, top_k, top_p, part_uniform)
                for model_state, part_uniform in zip(state.model_states, split(uniform))
            ],
            axis=0,
        )  # (batch,)
        ids = tf.where(stopped(state.lines), PAD_ID, ids)
        model_states = tuple(steps.advance(model_state, part_ids) for model_state, part_ids in zip(state.model_states, split(ids)))
        lines = state.lines + tf.cast(ids == LINE_BREAK_ID, tf.int32)
        return LoopState(state.index + 1, model_states, lines, state.generated.write(state.index, ids))

    def stopped(lines):  # (batch,) bool
        return (max_lines > 0) & (lines >= max_lines)

    def more(state: LoopState):
        return (state.index < num_tokens) & ~tf.reduce_all(stopped(state.lines))

    start = LoopState(
        index=tf.constant(0),
        model_states=tuple(steps.start(part) for part in split(windows)),
        lines=tf.zeros([batch_size], tf.int32),
        generated=tf.TensorArray(tf.int32, size=0, dynamic_size=True),
    )
    (end,) = tf.while_loop(more, lambda state: (step(state),), (start,))
    # An empty TensorArray cannot be stacked (its element shape is unknown).
    return tf.cond(
        end.generated.size() > 0,
        lambda: tf.transpose(end.generated.stack()),  # (batch, steps)
        lambda: tf.zeros([batch_size, 0], tf.int32),
    )


def main(args: argparse.Namespace) -> int:
    """``python -m keras_rnnlm.generate``, its arguments checked (:func:`keras_rnnlm.arguments.generate`):
    writes each sample to stdout, for one prompt or, with ``--interactive``, one a line
    of standard input."""
    if getattr(args, "latest", False):
        logger.info("using %s (the most recent run; pass --model to choose another)", args.model)
    generator = Generator.from_run(args.model, cache=args.cache)
    if args.interactive and hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")  # bytes that are not UTF-8 get a one-line error, not a traceback
    prompts = (line.rstrip("\n") for line in sys.stdin) if args.interactive else [args.prompt]
    if args.interactive:
        print("type a prompt and press Enter (Ctrl-D to stop)", file=sys.stderr)
    for number, prompt in enumerate(prompts):
        if args.interactive:
            check_text(prompt, f"prompt {number + 1}")
        if unknown := generator.unknown_words(prompt):
            words = shown(", ".join(dict.fromkeys(unknown)))
            logger.warning("warning: not in the vocabulary, read as <unk>: %s",
                           words if len(words) <= ECHOED_CHARACTERS else f"{words[:ECHOED_CHARACTERS]}…")
        texts = generator.generate([prompt] * args.num_samples, args.words, args.sampling,
                                   seed=(args.seed + number) % 2**31, max_lines=args.max_lines)
        echoed = len(generator.tokenizer.text_from_tokens(generator.tokenizer.tokens_from_text(prompt)))
        print(("\n\n" if generator.tokenizer.level == "word" else "\n").join(shown(text.rstrip("\n"), echoed) for text in texts),
              flush=True)
    return 0


# Characters of a prompt printed back before its continuation: a longer prompt is shown by its end.
ECHOED_CHARACTERS = 1_000


def shown(text: str, prompt_characters: int = 0) -> str:
    """``text`` as it is safe to print: control characters (a NUL, an escape sequence)
    written as ``\\xNN``, and of its first ``prompt_characters`` (the prompt, printed back)
    only the last :data:`ECHOED_CHARACTERS`, after "…"."""
    if prompt_characters > ECHOED_CHARACTERS:
        text = "…" + text[prompt_characters - ECHOED_CHARACTERS:]
    return printable(text)
