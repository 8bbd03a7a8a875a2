"""Choosing the next token from the model's logits: one sampler, whose presets are the
strategies.

:class:`Sampling` holds the settings, checked once when it is made; :func:`next_ids`
applies them inside the compiled generation loop:

- ``temperature`` divides the logits; 0 is greedy (the most likely token), the limit of
  ever lower temperatures;
- ``top_k`` keeps the k most likely tokens (after the temperature);
- ``top_p`` keeps the smallest set of most likely tokens whose probability reaches p;
- then one token is drawn from what is left, in proportion to its probability.

The strategies of the command line are presets (:meth:`Sampling.from_strategy`):
``greedy``; ``temperature`` (the default, T = 1: the model's own distribution);
``top_k`` (k = 40 unless given); ``top_p`` (p = 0.9 unless given). Settings compose.

TensorFlow is imported inside the functions that run in the loop, so that the command
line can check the settings before TensorFlow loads.

Example:
    >>> Sampling.from_strategy("top_k", temperature=0.8)
    Sampling(temperature=0.8, top_k=40, top_p=1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from keras_rnnlm.errors import RnnlmError

STRATEGIES = ("greedy", "temperature", "top_k", "top_p")
MAX_TOKENS = 100_000  # Most tokens one call writes: more is almost surely a typo (and holds a batch for minutes).
DEFAULT_TOP_K = 40
DEFAULT_TOP_P = 0.9
BLOCK = 128  # Ids per block of the two-level draw (sample_in_blocks); near the square root of a typical vocabulary.


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen.

    Args:
        temperature: Divides the logits; 0 is greedy. Defaults to 1.0.
        top_k: Keep the k most likely tokens; 0 keeps all, as does any k of at least the
            vocabulary size. Defaults to 0.
        top_p: Keep the nucleus of probability p, in (0, 1]; 1 keeps all. Defaults to 1.0.

    Raises:
        RnnlmError: A setting is out of range.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise RnnlmError(f"temperature must be a finite number, 0 (greedy) or above, got {self.temperature}")
        if not 0 <= self.top_k < 2**31:
            raise RnnlmError(f"top-k must be at least 1 (or 0 for all tokens) and below 2,147,483,648, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise RnnlmError(f"top-p must be in (0, 1], got {self.top_p}")

    @classmethod
    def from_strategy(
        cls, strategy: str = "temperature", temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
    ) -> Sampling:
        """The settings of a strategy preset.

        Args:
            strategy: "greedy", "temperature" (default), "top_k" or "top_p".
            temperature: Above 0. Defaults to 1.0; ignored by "greedy".
            top_k: At least 1. Defaults to None: all tokens (40 for "top_k").
            top_p: In (0, 1]. Defaults to None: all tokens (0.9 for "top_p").

        Raises:
            RnnlmError: An unknown strategy or a setting out of range.
        """
        if strategy not in STRATEGIES:
            raise RnnlmError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
        if strategy == "greedy":
            return cls(temperature=0.0)
        if not 0 < temperature < math.inf:
            raise RnnlmError(f"temperature must be above 0 and finite, got {temperature}; use --strategy greedy for the most likely token")
        if top_k is not None and top_k < 1:
            raise RnnlmError(f"top-k must be at least 1, got {top_k}")
        top_k = top_k if top_k is not None else (DEFAULT_TOP_K if strategy == "top_k" else 0)
        top_p = top_p if top_p is not None else (DEFAULT_TOP_P if strategy == "top_p" else 1.0)
        return cls(float(temperature), int(top_k), float(top_p))


def check_generation(num_tokens: int, max_lines: int | None = None, seed: int = 0) -> None:
    """Refuses a generation request out of range: what :meth:`Generator.generate
    <keras_rnnlm.generate.Generator.generate>` checks, and the command line before
    TensorFlow loads.

    Args:
        num_tokens: Tokens to write, 1 to :data:`MAX_TOKENS`.
        max_lines: Line breaks after which a sample stops: 0 (no limit) or more, or None
            (the model's default).
        seed: 0 to 2**31 - 1.

    Raises:
        RnnlmError: Naming the first setting out of range.
    """
    if not 1 <= num_tokens <= MAX_TOKENS:
        raise RnnlmError(f"the number of words must be between 1 and {MAX_TOKENS:,}, got {num_tokens:,}")
    if max_lines is not None and not 0 <= max_lines < 2**31:
        raise RnnlmError(f"max-lines must be 0 (no limit) or more, and below 2,147,483,648, got {max_lines}")
    if not 0 <= seed < 2**31:
        raise RnnlmError(f"the seed must be between 0 and 2,147,483,647, got {seed:,}")


def next_ids(logits, temperature, top_k, top_p, uniform):
    """One token id per row, chosen as :class:`Sampling` describes.

    Args:
        logits: float32 (batch, blocks * BLOCK); ids of logit -inf are never chosen.
        temperature: float32 scalar; 0 is greedy.
        top_k: int32 scalar; 0 keeps all.
        top_p: float32 scalar; 1 keeps all.
        uniform: float32 (batch, 2), uniform in [0, 1): each row's two random draws.

    Returns:
        int32 (batch,).
    """
    import tensorflow as tf

    def sample():
        scaled = tf.cond(temperature == 1.0, lambda: logits, lambda: logits / tf.maximum(temperature, 1e-6))
        # Sorting the vocabulary costs more than the model; skip it unless asked for.
        kept = tf.cond((top_k > 0) & (top_k < tf.shape(logits)[1]), lambda: _keep_top_k(scaled, top_k), lambda: scaled)
        kept = tf.cond(top_p < 1.0, lambda: _keep_top_p(kept, top_p), lambda: kept)
        return sample_in_blocks(kept, uniform)

    return tf.cond(temperature > 0, sample, lambda: tf.argmax(logits, axis=-1, output_type=tf.int32))


def sample_in_blocks(logits, uniform):
    """Draws one id per row from softmax(logits) by inverse transform sampling in two
    levels: a block of BLOCK ids by the blocks' total probabilities, then an id within it.

    ``tf.random.stateless_categorical`` does the same in one level, but reads every
    probability once per draw and measured slower than the model's own step
    (``benchmarks/generate_breakdown.py``); this reads the probabilities once (the block
    sums) and then only one block per row.

    Args:
        logits: float32 (batch, blocks * BLOCK).
        uniform: float32 (batch, 2), uniform in [0, 1): the row's two random draws.

    Returns:
        int32 (batch,).
    """
    import tensorflow as tf

    batch_size, num_blocks = tf.shape(logits)[0], tf.shape(logits)[1] // BLOCK  # (-1 is ambiguous for 0 rows)
    blocks = tf.reshape(tf.nn.softmax(logits), [batch_size, num_blocks, BLOCK])  # (batch, blocks, BLOCK)
    block = _inverse_cdf(tf.reduce_sum(blocks, axis=2), uniform[:, 0])  # (batch,)
    within = _inverse_cdf(tf.gather(blocks, block, axis=1, batch_dims=1), uniform[:, 1])  # (batch,)
    return block * BLOCK + within


def _inverse_cdf(weights, uniform):
    """The first index whose cumulative weight exceeds ``uniform`` times the total: index i
    with probability weights[i] / total. Weights (batch, n) >= 0; uniform (batch,) in [0, 1)."""
    import tensorflow as tf

    cumulative = tf.cumsum(weights, axis=1)  # (batch, n)
    total = cumulative[:, -1:]  # (batch, 1)
    # Kept below the total despite rounding, so the index found always has a weight above 0.
    target = tf.minimum(uniform[:, tf.newaxis] * total, total * (1 - 1e-6))  # (batch, 1)
    return tf.searchsorted(cumulative, target, side="right", out_type=tf.int32)[:, 0]


def _keep_top_k(logits, k):
    import tensorflow as tf

    kth_best = tf.math.top_k(logits, k).values[:, -1:]  # (batch, 1)
    return tf.where(logits < kth_best, -np.inf, logits)


def _keep_top_p(logits, p):
    """Keeps the smallest set of most likely tokens whose probability reaches p."""
    import tensorflow as tf

    probabilities = tf.nn.softmax(logits)  # (batch, vocabulary)
    ranked = tf.sort(probabilities, direction="DESCENDING")  # (batch, vocabulary)
    before = tf.cumsum(ranked, axis=-1, exclusive=True)  # probability of the tokens ranked above
    # The least likely token still needed to reach p; ties with it are kept too.
    smallest_kept = tf.reduce_min(tf.where(before < p, ranked, np.inf), axis=-1, keepdims=True)  # (batch, 1)
    return tf.where(probabilities < smallest_kept, -np.inf, logits)
