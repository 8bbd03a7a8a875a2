"""Token ids to training examples, built inside tf.data: fixed windows over the stream
(windows mode), or lanes read in order (bptt mode, :class:`Lanes`).

In windows mode every example is ``window_size`` token ids and its target is the token that follows
them: in "cause baby now we got bad", the window ``cause baby now we got`` has the
target ``bad``. Windows run over line breaks (the line-break token is context). Each
segment (a document's training part, or its held-out part) starts afresh: the first
tokens of a file are predicted from a window left-padded with ``<pad>``, and no window
reaches into another segment.

The text is held once, as :class:`~keras_rnnlm.splits.Segments`: the ids of every segment end to end, either
an array in memory or token shards on disk (``python -m keras_rnnlm.prepare``,
:mod:`keras_rnnlm.shards`). Each batch's windows, or each step's lanes, are gathered
from it by NumPy inside the tf.data pipeline (``tf.numpy_function``), the same code for
both, so no (examples x window) array and no one-hot target is ever built, and memory
does not grow with a prepared corpus. (TensorFlow's own gather would need the text as a
tensor in memory; the NumPy gather of a batch costs a small fraction of a training step:
benchmarks/RESULTS.md, "Large corpora", compares the two ways of training.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from keras_rnnlm.config import DEFAULT_BATCH_SIZES, DataConfig
from keras_rnnlm.splits import Segments, check_text_sizes
from keras_rnnlm.vocab import LINE_BREAK_ID, PAD_ID


def as_segments(segments: Segments | Sequence[np.ndarray]) -> Segments:
    """``segments`` as :class:`Segments` (a list of id arrays is copied end to end)."""
    return segments if isinstance(segments, Segments) else Segments.from_arrays(segments)


@dataclass(frozen=True)
class WindowedStream:
    """Examples over segments: example ``k`` predicts token ``k`` of the text from the
    ``window_size`` tokens before it in its segment, left-padded at the segment's start.

    Attributes:
        segments: The text.
        window_size: Tokens of context per example.
    """

    segments: Segments
    window_size: int
    _starts: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        ends = np.asarray(self.segments.ends, np.int64)
        object.__setattr__(self, "_starts", np.concatenate([[0], ends[:-1]]).astype(np.int64))

    @property
    def num_windows(self) -> int:
        return self.segments.num_tokens

    def examples(self, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The windows and targets of examples.

        Args:
            numbers: int64 (batch,) example numbers.

        Returns:
            int32 windows (batch, window_size) and int32 targets (batch,).
        """
        numbers = np.asarray(numbers, np.int64)
        segment = np.searchsorted(self.segments.ends, numbers, side="right")  # (batch,)
        positions = numbers[:, np.newaxis] + np.arange(-self.window_size, 0)  # (batch, window_size)
        inside = positions >= self._starts[segment][:, np.newaxis]  # (batch, window_size): False before the segment
        windows = np.where(inside, self.segments.tokens[np.maximum(positions, 0)], PAD_ID)
        return windows.astype(np.int32), np.asarray(self.segments.tokens[numbers], np.int32)

    def target_ids(self) -> np.ndarray:
        """The target token of every example, in order (int32)."""
        return np.asarray(self.segments.tokens[np.arange(self.num_windows)], np.int32)


def windowed_stream(segments: Segments | Sequence[np.ndarray], window_size: int) -> WindowedStream:
    """The examples of ``segments`` (a list of int32 id arrays is copied end to end).

    Args:
        segments: The text; empty segments hold no example.
        window_size: Tokens of context per example.
    """
    return WindowedStream(as_segments(segments), window_size)


def windows_dataset(stream: WindowedStream, batch_size: int, shard: tuple[int, int] = (0, 1)) -> tf.data.Dataset:
    """One pass over the stream in order (validation, evaluation): batches of int32
    ``windows`` (batch, window_size) and ``targets`` (batch,); the last may be smaller.
    ``shard`` (index, count): only this worker's share of every batch (:func:`worker_share`)."""
    batches, gather = _window_batches(stream, batch_size, shard)
    return _without_autotune(batches.map(gather))


def training_windows(
    stream: WindowedStream, batch_size: int, seed: int, first_step: int = 0, shard: tuple[int, int] = (0, 1)
) -> tf.data.Dataset:
    """The training batches from batch ``first_step`` on, pass after pass over the
    examples, endlessly (``fit`` is told an epoch's length, so that one iterator serves
    the whole run).

    Pass ``p`` visits every example once, in the permutation drawn from ``(seed, p)``: a
    run resumed at any batch reads what the uninterrupted run read. ``index_shuffle``
    gives each example's place in the permutation without building it: ``Dataset.shuffle``
    would hold every example as a tensor in its buffer, a materialized permutation 4 bytes
    per token.

    With ``shard`` (index, count), a worker of several reads only its share of every
    batch (:func:`worker_share`): together the workers read each batch once.

    Returns:
        Prefetched batches of int32 ``windows`` (batch, window_size) and ``targets`` (batch,).
    """
    batches, gather = _window_batches(stream, batch_size, shard)
    last = stream.num_windows - 1

    def one_pass(number):  # int64 scalar
        seed_pair = tf.stack([tf.constant(seed, tf.int64), number])
        return batches.map(lambda examples: tf.random.experimental.index_shuffle(examples, seed_pair, last))

    return _without_autotune(_endless(one_pass, first_step, batches_per_pass(stream.num_windows, batch_size)).map(gather)
                             .prefetch(PREFETCH_BATCHES))


def batches_per_pass(num_windows: int, batch_size: int) -> int:
    """Batches in one pass over ``num_windows`` examples (the last may be smaller)."""
    return -(-num_windows // batch_size)


def worker_share(start, end, shard: tuple[int, int]):
    """Worker ``index`` of ``count``'s part of the batch ``start`` to ``end``: the
    index-th of ``count`` consecutive parts whose sizes differ by at most one."""
    index, count = shard
    size = end - start
    return start + index * size // count, start + (index + 1) * size // count


def _window_batches(stream: WindowedStream, batch_size: int, shard: tuple[int, int] = (0, 1)):
    """The batches of example numbers, in order (this worker's share of each), and the
    function that gathers a batch's windows and targets (:meth:`WindowedStream.examples`,
    run by NumPy)."""
    window_size, num_windows = stream.window_size, stream.num_windows

    def example_numbers(batch):  # this worker's part of the batch-th run of batch_size example numbers
        first, last = worker_share(batch * batch_size, tf.minimum((batch + 1) * batch_size, num_windows), shard)
        return tf.range(first, last)

    def gather(examples):  # (batch,) int64 example numbers
        windows, targets = tf.numpy_function(stream.examples, [examples], (tf.int32, tf.int32), stateful=False)
        return tf.ensure_shape(windows, [None, window_size]), tf.ensure_shape(targets, [None])

    return tf.data.Dataset.range(batches_per_pass(num_windows, batch_size)).map(example_numbers), gather


# Batches a training dataset gathers ahead, in one background thread, while a step runs.
PREFETCH_BATCHES = 2


def _without_autotune(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with tf.data's autotuning off, and its maps left as written (one call
    at a time: the gather is NumPy under the GIL, which parallel calls would only contend for).

    Autotuning runs a thread per iterator that wakes at periods doubling up to 60 s; an
    iterator's destructor waits for it, and (TensorFlow 2.21) a cancellation that comes
    just before the thread's wait is missed, so the wait runs its whole period. That was
    the multi-second stall at Keras' destruction of each epoch's validation iterator, and
    minutes at the exit of a finished run (the training iterator); without the thread,
    neither happens.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.map_parallelization = False
    return dataset.with_options(options)


def _endless(one_pass: Callable[[tf.Tensor], tf.data.Dataset], first_step: int, steps_per_pass: int) -> tf.data.Dataset:
    """``one_pass(p)`` for p = 0, 1, ... end to end, from its ``first_step``-th element on."""
    first_pass, skipped = divmod(first_step, steps_per_pass)
    passes = tf.data.Dataset.range(first_pass, np.iinfo(np.int64).max)
    return passes.flat_map(one_pass).skip(skipped)


# Lanes a bptt-mode model scores a text in, side by side, each from zero state, as the
# PyTorch word-language-model example scores its validation and test text.
EVALUATION_LANES = 10


@dataclass(frozen=True)
class Lanes:
    """A token stream laid out for truncated backpropagation through time (bptt mode).

    The text is read as ``num_lanes`` contiguous lanes side by side, lane ``i`` the
    ``i``-th slice of the text, in order. Each step reads the next ``bptt_steps`` tokens
    of every lane and predicts the token after each one. The stream starts with a line
    break, as if the text followed one, so that its first token is predicted too: every
    token of the text is a target exactly once. The lanes are padded at the end to whole
    steps; a padding target has weight 0. Lane ``i`` reads stream positions
    ``i * lane_length`` to ``(i + 1) * lane_length``, overlapping lane ``i + 1`` by its
    last target.

    Attributes:
        tokens: The text's ids (as :attr:`Segments.tokens`).
        num_targets: The text's tokens, the targets of weight 1.
        num_lanes: Lanes read side by side (the batch size).
        lane_length: Inputs per lane, whole steps.
        bptt_steps: Tokens each lane reads per step.
    """

    tokens: object
    num_targets: int
    num_lanes: int
    lane_length: int
    bptt_steps: int

    @property
    def num_steps(self) -> int:
        return self.lane_length // self.bptt_steps

    def step(self, number: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step ``number``: int32 inputs and targets, float32 weights, (lanes, bptt_steps) each."""
        positions = (np.arange(self.num_lanes, dtype=np.int64)[:, np.newaxis] * self.lane_length
                     + int(number) * self.bptt_steps + np.arange(self.bptt_steps + 1))  # (lanes, steps + 1)
        ids = self._stream(positions)
        return ids[:, :-1], ids[:, 1:], (positions[:, 1:] <= self.num_targets).astype(np.float32)

    def _stream(self, positions: np.ndarray) -> np.ndarray:
        """The stream's ids at ``positions``: a line break, the text, then padding (int32)."""
        if not self.num_targets:
            return np.where(positions == 0, LINE_BREAK_ID, PAD_ID).astype(np.int32)
        text = np.asarray(self.tokens[np.clip(positions - 1, 0, self.num_targets - 1)], np.int32)
        ids = np.where(positions <= self.num_targets, text, PAD_ID)
        return np.where(positions == 0, LINE_BREAK_ID, ids).astype(np.int32)


def lanes(segments: Segments | Sequence[np.ndarray], num_lanes: int, bptt_steps: int) -> Lanes:
    """Joins segments end to end (after one line break) and cuts them into lanes.

    Args:
        segments: The text, e.g. the documents' training parts; the recurrent state
            carries over from one segment to the next as over a line break.
        num_lanes: Lanes read side by side (the batch size).
        bptt_steps: Tokens each lane reads per step.
    """
    text = as_segments(segments)
    num_targets = text.num_tokens
    lane_length = -(-max(-(-num_targets // num_lanes), 1) // bptt_steps) * bptt_steps  # whole steps
    return Lanes(text.tokens, num_targets, num_lanes, lane_length, bptt_steps)


def lanes_dataset(lanes: Lanes) -> tf.data.Dataset:
    """The steps of an epoch over the lanes, in order.

    Returns:
        Batches of int32 ``inputs`` (lanes, bptt_steps), int32 ``targets`` (lanes,
        bptt_steps) and float32 ``weights`` (lanes, bptt_steps): 1 for a token of the
        text, 0 for padding.
    """
    shape = [lanes.num_lanes, lanes.bptt_steps]

    def step(number):
        inputs, targets, weights = tf.numpy_function(lanes.step, [number], (tf.int32, tf.int32, tf.float32), stateful=False)
        return tf.ensure_shape(inputs, shape), tf.ensure_shape(targets, shape), tf.ensure_shape(weights, shape)

    return _without_autotune(tf.data.Dataset.range(lanes.num_steps).map(step))


def training_lanes(lanes: Lanes, first_step: int = 0) -> tf.data.Dataset:
    """:func:`lanes_dataset` pass after pass, from step ``first_step`` on, endlessly and
    prefetched: every pass reads the lanes in the same order."""
    one_pass = lanes_dataset(lanes)
    return _without_autotune(_endless(lambda _: one_pass, first_step, lanes.num_steps).prefetch(PREFETCH_BATCHES))


@dataclass(frozen=True)
class TrainingData:
    """What training reads, in either data mode.

    Attributes:
        train: From a first batch number (counted over the whole run) to the training
            batches from it on, pass after pass, endlessly (windows in an order drawn from
            the run's seed and the pass; lanes in order).
        steps_per_pass: Batches in one pass over the training text.
        valid: The validation batches, one pass.
        train_targets: Tokens predicted per training pass.
        valid_targets: Tokens predicted per validation pass.
        description: One line for the log.
    """

    train: Callable[[int], tf.data.Dataset]
    steps_per_pass: int
    valid: tf.data.Dataset
    train_targets: int
    valid_targets: int
    description: str


def training_data(
    config: DataConfig,
    train_segments: Segments | Sequence[np.ndarray],
    valid_segments: Segments | Sequence[np.ndarray],
    seed: int,
    shard: tuple[int, int] = (0, 1),
) -> TrainingData:
    """The training and validation batches of ``config.mode``, checked; with ``shard``
    (index, count), worker ``index``'s share of each batch (windows mode).

    Raises:
        RnnlmError: The text is too short for one batch, or there is no validation text.
    """
    train_segments, valid_segments = as_segments(train_segments), as_segments(valid_segments)
    if config.mode == "bptt":
        check_text_sizes(config, train_segments.num_tokens, valid_segments.num_tokens)
        train, valid = (lanes(segments, config.batch_size, config.bptt_steps) for segments in (train_segments, valid_segments))
        chosen = "data.batch_size" + ("; bptt mode's default" if config.batch_size == DEFAULT_BATCH_SIZES["bptt"] else "")
        description = (
            f"lanes: {train.num_lanes} lanes ({chosen}) of {train.lane_length:,} tokens, {train.bptt_steps} "
            f"(data.bptt_steps) a step: {train.num_steps:,} steps over {train.num_targets:,} training tokens; "
            f"{valid.num_targets:,} validation tokens (bptt mode, the state carried between steps)"
        )
        return TrainingData(
            lambda first_step: training_lanes(train, first_step), train.num_steps, lanes_dataset(valid),
            train.num_targets, valid.num_targets, description,
        )
    train, valid = (windowed_stream(segments, config.window_size) for segments in (train_segments, valid_segments))
    check_text_sizes(config, train.num_windows, valid.num_windows)
    description = f"windows: {train.num_windows:,} training, {valid.num_windows:,} validation, {config.window_size} tokens each"
    return TrainingData(
        lambda first_step: training_windows(train, config.batch_size, seed, first_step, shard),
        batches_per_pass(train.num_windows, config.batch_size),
        windows_dataset(valid, config.batch_size, shard),
        train.num_windows,
        valid.num_windows,
        description,
    )
