"""Writing text with a trained model: ``python -m keras_rnnlm.generate``.

The prompt is tokenized as in training and its last ``window_size`` ids (left-padded
like the start of a file) form the first window; each new token is appended and the
window slides. The whole loop is one compiled ``tf.function`` (a ``tf.while_loop`` that
carries the window) run for every sample of a batch at once, with stateless seeded
random ops: the same model, prompt, settings and seed give the same text. It never
calls ``model.predict`` once per token.

Sampling is one mechanism; the strategies are presets of it:

- ``greedy``: the most likely token.
- ``temperature``: sample from softmax(log p / T).
- ``top_k``: keep the k most likely tokens (after the temperature), renormalise, sample.
- ``top_p``: keep the smallest set of most likely tokens whose probability reaches p.

Temperature, top-k and top-p compose. Padding and ``<unk>`` are never generated.

Each step takes the next token's logits from :class:`keras_rnnlm.inference.NextTokenLogits`
(the model's own numbers, computed with fewer ops) and draws from them by two-level
inverse transform sampling (:func:`_sample_in_blocks`).

Example:
    >>> generator = Generator.from_run("saved_models/psalms")
    >>> generator.generate(["the lord is my"], num_tokens=20, strategy="top_k", top_k=40, seed=1)
    ['the lord is my strength and my song, ...']

    python -m keras_rnnlm.generate --prompt "the lord is my" --words 50 --strategy top_p --top-p 0.9
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_rnnlm import cli
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.inference import BLOCK, NextTokenLogits
from keras_rnnlm.tokenizer import Tokenizer
from keras_rnnlm.vocab import LINE_BREAK_ID, PAD_ID, UNK_ID, Vocabulary

logger = logging.getLogger("keras_rnnlm")

STRATEGIES = ("greedy", "temperature", "top_k", "top_p")
MAX_TOKENS = 100_000  # More in one call is almost surely a typo (and holds a batch for minutes).
DEFAULT_TOP_K = 40
DEFAULT_TOP_P = 0.9


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen; see the module docstring.

    Args:
        strategy: "greedy", "temperature" (default), "top_k" or "top_p".
        temperature: Divides the log-probabilities; above 0. Defaults to 1.0.
        top_k: Keep the k most likely tokens; None keeps all (``top_k`` strategy: 40).
        top_p: Keep the nucleus of probability p, in (0, 1]; None keeps all
            (``top_p`` strategy: 0.9).
    """

    strategy: str = "temperature"
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def graph_arguments(self, vocabulary_size: int) -> tuple[float, int, float]:
        """Checks the settings; returns (temperature, top_k, top_p) for the compiled loop,
        where temperature 0 means greedy, top_k 0 keeps all and top_p 1 keeps all.

        Raises:
            RnnlmError: A setting is out of range.
        """
        if self.strategy not in STRATEGIES:
            raise RnnlmError(f"strategy {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if self.strategy != "greedy" and not self.temperature > 0:
            raise RnnlmError(f"temperature must be above 0, got {self.temperature}; use --strategy greedy for the most likely token")
        top_k = self.top_k if self.top_k is not None else (DEFAULT_TOP_K if self.strategy == "top_k" else 0)
        top_p = self.top_p if self.top_p is not None else (DEFAULT_TOP_P if self.strategy == "top_p" else 1.0)
        if self.top_k is not None and not 1 <= self.top_k <= vocabulary_size:
            raise RnnlmError(f"top-k must be between 1 and the vocabulary size {vocabulary_size}, got {self.top_k}")
        if not 0 < top_p <= 1:
            raise RnnlmError(f"top-p must be in (0, 1], got {top_p}")
        if self.strategy == "greedy":
            return 0.0, 0, 1.0
        return float(self.temperature), int(min(top_k, vocabulary_size)), float(top_p)


class Generator:
    """Continues prompts with a trained model.

    Args:
        model: Maps int32 windows (batch, window_size) to probabilities (batch, vocabulary_size).
        vocabulary: The vocabulary the model was trained with.
        tokenizer: The tokenizer the model was trained with.
        window_size: Tokens of context the model reads.
        line_mode: The model was trained on independent lines (``corpus.sequences =
            "lines"``): a prompt starts a line and a sample ends at its line break.
    """

    def __init__(self, model, vocabulary: Vocabulary, tokenizer: Tokenizer, window_size: int, line_mode: bool = False):
        self.model = model
        self.vocabulary = vocabulary
        self.tokenizer = tokenizer
        self.window_size = window_size
        self.line_mode = line_mode
        self.logits = NextTokenLogits(model, len(vocabulary), banned_ids=[PAD_ID, UNK_ID])
        # An explicit signature: one trace serves every batch size and setting, and the
        # same function can be exported in a SavedModel.
        self.generate_ids = tf.function(
            self._generate_ids,
            input_signature=[
                tf.TensorSpec([None, window_size], tf.int32, name="windows"),
                tf.TensorSpec([], tf.int32, name="num_tokens"),
                tf.TensorSpec([], tf.float32, name="temperature"),
                tf.TensorSpec([], tf.int32, name="top_k"),
                tf.TensorSpec([], tf.float32, name="top_p"),
                tf.TensorSpec([], tf.int32, name="seed"),
                tf.TensorSpec([], tf.int32, name="max_lines"),
            ],
        )

    @classmethod
    def from_run(cls, run_dir: str | Path) -> Generator:
        """Loads the model, vocabulary and tokenizer of a run folder.

        Raises:
            RnnlmError: The folder is missing or not a keras_rnnlm run.
        """
        from keras_rnnlm.runs import RunFolder  # runs imports the model module, which is heavier.

        config, vocabulary, tokenizer, model = RunFolder(run_dir).load()
        return cls(model, vocabulary, tokenizer, config.window_size, line_mode=config.corpus.sequences == "lines")

    def windows_from_prompts(self, prompts: list[str]) -> np.ndarray:
        """Tokenizes prompts as in training; the last ``window_size`` ids, left-padded.

        Returns:
            int32 (len(prompts), window_size).
        """
        windows = np.full((len(prompts), self.window_size), PAD_ID, dtype=np.int32)
        for row, prompt in enumerate(prompts):
            ids = self.vocabulary.ids_from_tokens(self.tokenizer.tokens_from_text(prompt))[-self.window_size :]
            windows[row, self.window_size - len(ids) :] = ids
        return windows

    def unknown_words(self, prompt: str) -> list[str]:
        """The prompt's tokens that are not in the vocabulary (read as ``<unk>``)."""
        return [token for token in self.tokenizer.tokens_from_text(prompt) if self.vocabulary.id_from_token(token) == UNK_ID]

    def generate(
        self,
        prompts: list[str],
        num_tokens: int,
        strategy: str = "temperature",
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        max_lines: int | None = None,
    ) -> list[str]:
        """Continues each prompt, all prompts in one batch.

        Args:
            prompts: Texts to continue; an empty prompt starts as a file does.
            num_tokens: Most tokens (words, punctuation, line breaks; or characters) to add.
            strategy: "greedy", "temperature" (default), "top_k" or "top_p".
            temperature: Above 0; lower is safer, higher more varied. Defaults to 1.0.
            top_k: Sample among the k most likely tokens. Defaults to None (all; 40 for "top_k").
            top_p: Sample within the nucleus of probability p. Defaults to None (all; 0.9 for "top_p").
            seed: Same seed, same text. Defaults to 0.
            max_lines: Stop a sample after this many line breaks; 0 never stops early.
                Defaults to None: 1 for a line-mode model (one name or sentence), else 0.

        Returns:
            Each prompt (as tokenized) followed by its continuation, detokenized.

        Raises:
            RnnlmError: A setting or the token count is out of range.
        """
        if not 1 <= num_tokens <= MAX_TOKENS:
            raise RnnlmError(f"the number of words must be between 1 and {MAX_TOKENS:,}, got {num_tokens:,}")
        if max_lines is None:
            max_lines = 1 if self.line_mode else 0
        if max_lines < 0:
            raise RnnlmError(f"max-lines must be 0 (no limit) or more, got {max_lines}")
        temperature, top_k, top_p = Sampling(strategy, temperature, top_k, top_p).graph_arguments(len(self.vocabulary))
        new_ids = self.generate_ids(
            tf.constant(self.windows_from_prompts(prompts)),
            tf.constant(num_tokens, tf.int32),
            tf.constant(temperature, tf.float32),
            tf.constant(top_k, tf.int32),
            tf.constant(top_p, tf.float32),
            tf.constant(seed, tf.int32),
            tf.constant(max_lines, tf.int32),
        ).numpy()
        return [self.text_from_ids(prompt, ids) for prompt, ids in zip(prompts, new_ids)]

    def text_from_ids(self, prompt: str, ids: np.ndarray) -> str:
        """The prompt followed by the generated ids, detokenized; padding marks a sample that stopped."""
        tokens = self.vocabulary.tokens_from_ids(ids[ids != PAD_ID])
        return self.tokenizer.text_from_tokens(self.tokenizer.tokens_from_text(prompt) + tokens)

    def _generate_ids(self, windows, num_tokens, temperature, top_k, top_p, seed, max_lines):
        """The compiled loop. Returns int32 (batch, steps): steps <= num_tokens, and a
        sample that reached ``max_lines`` is padded with ``<pad>`` from then on."""
        batch_size = tf.shape(windows)[0]
        vocabulary_size = len(self.vocabulary)

        steps = self.logits.prepare()  # what every step shares, computed once per call
        # The two halves of a batch are independent chains of small ops, which
        # TensorFlow's executor runs side by side on two cores (what it gains and
        # costs: benchmarks/RESULTS.md). At batch 1 the second half is empty.
        half = batch_size - batch_size // 2

        def halves(tensor):
            return tensor[:half], tensor[half:]

        def sample(logits, uniform):
            logits = tf.cond(temperature == 1.0, lambda: logits, lambda: logits / tf.maximum(temperature, 1e-6))
            # Sorting the vocabulary costs more than the model; skip it unless asked for.
            logits = tf.cond(
                (top_k > 0) & (top_k < vocabulary_size), lambda: _keep_top_k(logits, top_k), lambda: logits
            )
            logits = tf.cond(top_p < 1.0, lambda: _keep_top_p(logits, top_p), lambda: logits)
            return _sample_in_blocks(logits, uniform)

        def next_ids(state, uniform):
            logits = steps.logits(state)  # (rows, padded vocabulary); banned ids are -inf
            return tf.cond(
                temperature > 0,
                lambda: sample(logits, uniform),
                lambda: tf.argmax(logits, axis=-1, output_type=tf.int32),
            )  # (rows,)

        def step(index, states, lines, generated):
            uniform = tf.random.stateless_uniform([batch_size, 2], seed=tf.stack([seed, index]))  # (batch, 2)
            ids = tf.concat([next_ids(state, rows) for state, rows in zip(states, halves(uniform))], axis=0)  # (batch,)
            done = (max_lines > 0) & (lines >= max_lines)  # (batch,)
            ids = tf.where(done, PAD_ID, ids)
            lines += tf.cast(ids == LINE_BREAK_ID, tf.int32)
            states = tuple(steps.advance(state, rows) for state, rows in zip(states, halves(ids)))
            return index + 1, states, lines, generated.write(index, ids)

        def more(index, states, lines, generated):
            return (index < num_tokens) & ~tf.reduce_all((max_lines > 0) & (lines >= max_lines))

        states = tuple(steps.start(rows) for rows in halves(windows))
        _, _, _, generated = tf.while_loop(
            more,
            step,
            (tf.constant(0), states, tf.zeros([batch_size], tf.int32), tf.TensorArray(tf.int32, size=0, dynamic_size=True)),
        )
        # An empty TensorArray cannot be stacked (its element shape is unknown).
        return tf.cond(
            generated.size() > 0,
            lambda: tf.transpose(generated.stack()),  # (batch, steps)
            lambda: tf.zeros([batch_size, 0], tf.int32),
        )


def _sample_in_blocks(logits, uniform):
    """Draws one id per row from softmax(logits) by inverse transform sampling in two
    levels: a block of BLOCK ids by the blocks' total probabilities, then an id within it.

    ``tf.random.stateless_categorical`` does the same in one level but took 2.3 ms a step
    over a (64, 10,000) batch here, more than the LSTM; this reads the probabilities once
    (the block sums) and then only one block per row.

    Args:
        logits: float32 (batch, blocks * BLOCK).
        uniform: float32 (batch, 2), uniform in [0, 1): the row's two random draws.

    Returns:
        int32 (batch,).
    """
    batch_size, num_blocks = tf.shape(logits)[0], tf.shape(logits)[1] // BLOCK  # (-1 is ambiguous for 0 rows)
    blocks = tf.reshape(tf.nn.softmax(logits), [batch_size, num_blocks, BLOCK])  # (batch, blocks, BLOCK)
    block = _inverse_cdf(tf.reduce_sum(blocks, axis=2), uniform[:, 0])  # (batch,)
    within = _inverse_cdf(tf.gather(blocks, block, axis=1, batch_dims=1), uniform[:, 1])  # (batch,)
    return block * BLOCK + within


def _inverse_cdf(weights, uniform):
    """The first index whose cumulative weight exceeds ``uniform`` times the total: index i
    with probability weights[i] / total. Weights (batch, n) >= 0; uniform (batch,) in [0, 1)."""
    cumulative = tf.cumsum(weights, axis=1)  # (batch, n)
    total = cumulative[:, -1:]  # (batch, 1)
    # Kept below the total despite rounding, so the index found always has a weight above 0.
    target = tf.minimum(uniform[:, tf.newaxis] * total, total * (1 - 1e-6))  # (batch, 1)
    return tf.searchsorted(cumulative, target, side="right", out_type=tf.int32)[:, 0]


def _keep_top_k(logits, k):
    kth_best = tf.math.top_k(logits, k).values[:, -1:]  # (batch, 1)
    return tf.where(logits < kth_best, -np.inf, logits)


def _keep_top_p(logits, p):
    """Keeps the smallest set of most likely tokens whose probability reaches p."""
    probabilities = tf.nn.softmax(logits)  # (batch, vocabulary)
    ranked = tf.sort(probabilities, direction="DESCENDING")  # (batch, vocabulary)
    before = tf.cumsum(ranked, axis=-1, exclusive=True)  # probability of the tokens ranked above
    # The least likely token still needed to reach p; ties with it are kept too.
    smallest_kept = tf.reduce_min(tf.where(before < p, ranked, np.inf), axis=-1, keepdims=True)  # (batch, 1)
    return tf.where(probabilities < smallest_kept, -np.inf, logits)


def latest_run(output_dir: str | Path = "saved_models") -> Path:
    """The run folder in ``output_dir`` whose model was saved last.

    Raises:
        RnnlmError: There is no trained run there.
    """
    models = sorted(Path(output_dir).glob("*/model.keras"), key=lambda path: path.stat().st_mtime)
    if not models:
        raise RnnlmError(f"no trained run in {output_dir}/; train one with python -m keras_rnnlm.train, or pass --model")
    return models[-1].parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m keras_rnnlm.generate", description="Write text with a trained model.")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_samples < 1:
        raise RnnlmError(f"--num-samples must be at least 1, got {args.num_samples}")
    if args.model is None:
        args.model = latest_run()
        logger.info("using %s (the most recent run; pass --model to choose another)", args.model)
    generator = Generator.from_run(args.model)
    settings = dict(
        strategy=args.strategy, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, max_lines=args.max_lines
    )
    Sampling(args.strategy, args.temperature, args.top_k, args.top_p).graph_arguments(len(generator.vocabulary))
    prompts = (line.rstrip("\n") for line in sys.stdin) if args.interactive else [args.prompt]
    if args.interactive:
        print("type a prompt and press Enter (Ctrl-D to stop)", file=sys.stderr)
    for number, prompt in enumerate(prompts):
        if unknown := generator.unknown_words(prompt):
            logger.warning("warning: not in the vocabulary, read as <unk>: %s", ", ".join(dict.fromkeys(unknown)))
        texts = generator.generate([prompt] * args.num_samples, args.words, seed=args.seed + number, **settings)
        print(("\n\n" if generator.tokenizer.level == "word" else "\n").join(text.rstrip("\n") for text in texts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
