"""Token ids to training examples, built inside tf.data: fixed windows over the stream
(windows mode), or lanes read in order (bptt mode, :class:`Lanes`).

In windows mode every example is ``window_size`` token ids and its target is the token that follows
them: in "cause baby now we got bad", the window ``cause baby now we got`` has the
target ``bad``. Windows run over line breaks (the line-break token is context). Each
segment (a document's training part, or its held-out part) starts with ``window_size``
padding ids, so the first tokens of a file are predicted from a left-padded window and
no window reaches into another segment.

The stream is held once as int32 ids; each batch's windows are gathered from it inside
the tf.data pipeline, so no (examples x window) array and no one-hot target is ever
built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from keras_rnnlm.config import DataConfig
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.vocab import LINE_BREAK_ID, PAD_ID


@dataclass(frozen=True)
class WindowedStream:
    """Segments of ids laid end to end, each after ``window_size`` padding ids.

    Example ``k`` (counting from 0 over all segments) is the ``k``-th token that is not
    leading padding; it is found from the segment ends, so no array of target positions
    (4 bytes per corpus token) is ever held.

    Attributes:
        ids: int32 (stream_length,), the padded segments.
        window_ends: int64 (segments,), the number of examples up to the end of each
            segment: segment ``s`` holds examples ``window_ends[s - 1]`` to ``window_ends[s] - 1``.
        window_size: Tokens of context per example.
    """

    ids: np.ndarray
    window_ends: np.ndarray
    window_size: int

    @property
    def num_windows(self) -> int:
        return int(self.window_ends[-1]) if len(self.window_ends) else 0

    def target_positions(self, examples: np.ndarray | None = None) -> np.ndarray:
        """Where each example's target is in ``ids`` (all examples by default); its window
        is ``ids[target - window_size : target]``."""
        examples = np.arange(self.num_windows) if examples is None else np.asarray(examples)
        segments = np.searchsorted(self.window_ends, examples, side="right")
        return examples + (segments + 1) * self.window_size

    def target_ids(self) -> np.ndarray:
        """The target token of every example, in order (int32)."""
        return self.ids[self.target_positions()]


def windowed_stream(segments: Sequence[np.ndarray], window_size: int) -> WindowedStream:
    """Lays segments end to end, each left-padded with ``window_size`` padding ids.

    Args:
        segments: int32 id arrays; empty ones are skipped.
        window_size: Tokens of context per example.
    """
    lengths = np.array([len(segment) for segment in segments if len(segment)], dtype=np.int64)
    ids = np.full(int(lengths.sum()) + window_size * len(lengths), PAD_ID, dtype=np.int32)
    start = window_size
    for segment in segments:
        if len(segment):
            ids[start : start + len(segment)] = segment
            start += len(segment) + window_size
    return WindowedStream(ids, np.cumsum(lengths), window_size)


def split_by_position(
    documents: Sequence[np.ndarray], valid_fraction: float
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Holds out the last ``valid_fraction`` of every document for validation.

    Held-out text is split off by position, never as random windows: random windows
    overlap training windows and would leak the text the model is judged on.

    Returns:
        The training part and the validation part of each document.
    """
    train, valid = [], []
    for ids in documents:
        held_out = int(round(len(ids) * valid_fraction))
        train.append(ids[: len(ids) - held_out])
        valid.append(ids[len(ids) - held_out :])
    return train, valid


def split_lines(documents: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Cuts documents into lines for line mode: each line keeps its line break (the
    end token, the target after its last token); blank lines are dropped."""
    lines = []
    for ids in documents:
        ends = np.flatnonzero(ids == LINE_BREAK_ID) + 1
        starts = np.concatenate([[0], ends[:-1]])
        lines += [ids[start:end] for start, end in zip(starts, ends, strict=True) if end - start > 1]
    return lines


def split_random_lines(
    lines: Sequence[np.ndarray], valid_fraction: float, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Holds out a seeded random ``valid_fraction`` of the lines for validation.

    In line mode every line is its own sequence, so held-out lines share no window with
    training lines and a random choice cannot leak; it also spreads validation over the
    whole list instead of its (often alphabetical) end.
    """
    held_out = set(np.random.default_rng(seed).permutation(len(lines))[: int(round(len(lines) * valid_fraction))].tolist())
    train = [line for number, line in enumerate(lines) if number not in held_out]
    valid = [line for number, line in enumerate(lines) if number in held_out]
    return train, valid


def segments_for_training(
    documents: Sequence[np.ndarray],
    valid_documents: Sequence[np.ndarray] | None,
    sequences: str,
    valid_fraction: float,
    seed: int,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The training and validation segments of an encoded corpus.

    Args:
        documents: The corpus, one id array per document.
        valid_documents: Separate validation documents, or None to hold out part of ``documents``.
        sequences: "stream" (a segment per document; validation is the end of each) or
            "lines" (a segment per line; validation is random lines).
        valid_fraction: Share held out when there are no separate validation documents.
        seed: Seed of the random line split.
    """
    if sequences == "lines":
        lines = split_lines(documents)
        if valid_documents is not None:
            return lines, split_lines(valid_documents)
        return split_random_lines(lines, valid_fraction, seed)
    if valid_documents is not None:
        return list(documents), list(valid_documents)
    return split_by_position(documents, valid_fraction)


def segments_for_evaluation(documents: Sequence[np.ndarray], sequences: str) -> list[np.ndarray]:
    """The segments a text is scored as: whole documents, or lines in line mode."""
    return split_lines(documents) if sequences == "lines" else list(documents)


def check_sizes(train: WindowedStream, valid: WindowedStream) -> None:
    """Refuses a corpus too short to train on or to validate with.

    Raises:
        RnnlmError: Fewer than ``window_size + 1`` training tokens, or no validation token.
    """
    if train.num_windows < train.window_size + 1:
        raise RnnlmError(
            f"the corpus has only {train.num_windows} training tokens, fewer than window_size + 1 = "
            f"{train.window_size + 1}; give more text or a smaller data.window_size"
        )
    if valid.num_windows == 0:
        raise RnnlmError(
            "the validation split is empty; give more text, a larger corpus.valid_fraction, or --valid FILE"
        )


def windows_dataset(stream: WindowedStream, batch_size: int) -> tf.data.Dataset:
    """One pass over the stream in order (validation, evaluation): batches of int32
    ``windows`` (batch, window_size) and ``targets`` (batch,); the last may be smaller."""
    batches, gather = _window_batches(stream, batch_size)
    # No prefetching, and the gather (cheap) runs in the calling thread: with either,
    # destroying an iterator that had sat idle stalled for seconds (benchmarks/RESULTS.md,
    # "the validation stall"), and Keras destroys the validation iterator at every epoch's
    # evaluation. training_windows' iterator lives for the whole run and prefetches.
    return batches.map(gather)


def training_windows(stream: WindowedStream, batch_size: int, seed: int, first_epoch: int = 0) -> tf.data.Dataset:
    """The training batches of every epoch from ``first_epoch`` on, endlessly (``fit`` is
    told an epoch's length, so that one iterator serves the whole run).

    Epoch ``e`` visits every example once, in the permutation drawn from ``(seed, e)``: a
    run resumed at epoch ``e`` reads what the uninterrupted run read. ``index_shuffle``
    gives each example's place in the permutation without building it: ``Dataset.shuffle``
    would hold every example as a tensor in its buffer, a materialized permutation 4 bytes
    per token.

    Returns:
        Prefetched batches of int32 ``windows`` (batch, window_size) and ``targets`` (batch,).
    """
    batches, gather = _window_batches(stream, batch_size)
    last = stream.num_windows - 1

    def epoch(number):  # int64 scalar
        seed_pair = tf.stack([tf.constant(seed, tf.int64), number])
        return batches.map(lambda examples: tf.random.experimental.index_shuffle(examples, seed_pair, last))

    return _endless(first_epoch).flat_map(epoch).map(gather).prefetch(tf.data.AUTOTUNE)


def _window_batches(stream: WindowedStream, batch_size: int):
    """The batches of example numbers, in order, and the function that gathers a batch's
    windows and targets from the stream (which it holds once, as a constant)."""
    ids = tf.constant(stream.ids)  # (stream_length,)
    window_ends = tf.constant(stream.window_ends, dtype=tf.int64)  # (segments,)
    window_size, num_windows = stream.window_size, stream.num_windows
    offsets = tf.range(-window_size, 0, dtype=tf.int64)  # (window_size,)

    def example_numbers(batch):  # the batch-th run of batch_size example numbers
        return tf.range(batch * batch_size, tf.minimum((batch + 1) * batch_size, num_windows))

    def gather(examples):  # (batch,) int64 example numbers
        segments = tf.searchsorted(window_ends, examples, side="right", out_type=tf.int64)  # (batch,)
        positions = examples + (segments + 1) * window_size  # (batch,)
        windows = tf.gather(ids, positions[:, tf.newaxis] + offsets)  # (batch, window_size)
        return windows, tf.gather(ids, positions)  # (batch, window_size), (batch,)

    num_batches = -(-num_windows // batch_size)
    return tf.data.Dataset.range(num_batches).map(example_numbers), gather


def _endless(first_epoch: int) -> tf.data.Dataset:
    """Epoch numbers from ``first_epoch`` on (int64)."""
    return tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)


@dataclass(frozen=True)
class Lanes:
    """A token stream laid out for truncated backpropagation through time (bptt mode).

    The text is read as ``num_lanes`` contiguous lanes side by side, lane ``i`` the
    ``i``-th slice of the text, in order. Each step reads the next ``bptt_steps`` tokens
    of every lane and predicts the token after each one. The stream starts with a line
    break, as if the text followed one, so that its first token is predicted too: every
    token of the text is a target exactly once. The lanes are padded at the end to whole
    steps; a padding target has weight 0.

    Attributes:
        ids: int32 (num_lanes, num_steps * bptt_steps + 1): each lane's inputs, then its
            last target; lane ``i`` overlaps lane ``i + 1`` by that one token.
        num_targets: The text's tokens, the targets of weight 1.
        bptt_steps: Tokens each lane reads per step.
    """

    ids: np.ndarray
    num_targets: int
    bptt_steps: int

    @property
    def num_lanes(self) -> int:
        return self.ids.shape[0]

    @property
    def num_steps(self) -> int:
        return (self.ids.shape[1] - 1) // self.bptt_steps


def lanes(segments: Sequence[np.ndarray], num_lanes: int, bptt_steps: int) -> Lanes:
    """Joins segments end to end (after one line break) and cuts them into lanes.

    Args:
        segments: int32 id arrays, e.g. the documents' training parts; the recurrent state
            carries over from one to the next as over a line break.
        num_lanes: Lanes read side by side (the batch size).
        bptt_steps: Tokens each lane reads per step.
    """
    text = np.concatenate([np.asarray(segment, np.int32) for segment in segments] or [np.zeros(0, np.int32)])
    num_targets = len(text)
    lane_length = -(-max(-(-num_targets // num_lanes), 1) // bptt_steps) * bptt_steps  # whole steps
    stream = np.full(num_lanes * lane_length + 1, PAD_ID, dtype=np.int32)
    stream[0] = LINE_BREAK_ID
    stream[1 : num_targets + 1] = text
    starts = np.arange(num_lanes)[:, np.newaxis] * lane_length
    return Lanes(stream[starts + np.arange(lane_length + 1)], num_targets, bptt_steps)


def check_lanes(train_tokens: int, valid_tokens: int, num_lanes: int, bptt_steps: int) -> None:
    """Refuses a training text too short to fill every lane for one step, or no
    validation text (before any lane is laid out).

    Raises:
        RnnlmError: Fewer training tokens than lanes x bptt_steps, or no validation token.
    """
    if train_tokens < num_lanes * bptt_steps:
        raise RnnlmError(
            f"the corpus has only {train_tokens:,} training tokens, fewer than data.batch_size x "
            f"data.bptt_steps = {num_lanes} x {bptt_steps}; give more text, fewer lanes "
            "(data.batch_size) or shorter steps (data.bptt_steps)"
        )
    if valid_tokens == 0:
        raise RnnlmError("the validation split is empty; give more text, a larger corpus.valid_fraction, or --valid FILE")


def lanes_dataset(lanes: Lanes) -> tf.data.Dataset:
    """The steps of an epoch over the lanes, in order.

    Returns:
        Batches of int32 ``inputs`` (lanes, bptt_steps), int32 ``targets`` (lanes,
        bptt_steps) and float32 ``weights`` (lanes, bptt_steps): 1 for a token of the
        text, 0 for padding.
    """
    ids = tf.constant(lanes.ids)  # (lanes, length + 1)
    steps = lanes.bptt_steps
    lane_starts = tf.range(lanes.num_lanes)[:, tf.newaxis] * (lanes.ids.shape[1] - 1)  # (lanes, 1)

    def step(number):
        start = number * steps
        inputs = ids[:, start : start + steps]  # (lanes, steps)
        targets = ids[:, start + 1 : start + steps + 1]  # (lanes, steps)
        positions = lane_starts + start + tf.range(steps)[tf.newaxis]  # (lanes, steps): each target's place in the text
        return inputs, targets, tf.cast(positions < lanes.num_targets, tf.float32)

    return tf.data.Dataset.range(lanes.num_steps, output_type=tf.int32).map(step)


def training_lanes(lanes: Lanes, first_epoch: int = 0) -> tf.data.Dataset:
    """:func:`lanes_dataset` epoch after epoch, from ``first_epoch`` on, endlessly and
    prefetched: every epoch reads the lanes in the same order."""
    one_epoch = lanes_dataset(lanes)
    return _endless(first_epoch).flat_map(lambda _: one_epoch).prefetch(tf.data.AUTOTUNE)


@dataclass(frozen=True)
class TrainingData:
    """What training reads, in either data mode.

    Attributes:
        train: From a first epoch number to the training batches of every epoch from it on,
            endlessly (windows in an order drawn from the run's seed and the epoch; lanes
            in order).
        steps_per_epoch: Batches in an epoch.
        valid: The validation batches, one pass.
        train_targets: Tokens predicted per training epoch.
        valid_targets: Tokens predicted per validation pass.
        description: One line for the log.
    """

    train: Callable[[int], tf.data.Dataset]
    steps_per_epoch: int
    valid: tf.data.Dataset
    train_targets: int
    valid_targets: int
    description: str


def training_data(
    config: DataConfig, train_segments: Sequence[np.ndarray], valid_segments: Sequence[np.ndarray], seed: int
) -> TrainingData:
    """The training and validation batches of ``config.mode``, checked.

    Raises:
        RnnlmError: The text is too short for one batch, or there is no validation text.
    """
    if config.mode == "bptt":
        check_lanes(sum(map(len, train_segments)), sum(map(len, valid_segments)), config.batch_size, config.bptt_steps)
        train, valid = (lanes(segments, config.batch_size, config.bptt_steps) for segments in (train_segments, valid_segments))
        description = (
            f"lanes: {train.num_lanes} lanes of {train.num_steps * train.bptt_steps:,} tokens, {train.bptt_steps} "
            f"a step: {train.num_steps:,} steps over {train.num_targets:,} training tokens; "
            f"{valid.num_targets:,} validation tokens (bptt mode, the state carried between steps)"
        )
        return TrainingData(
            lambda first_epoch: training_lanes(train, first_epoch), train.num_steps, lanes_dataset(valid),
            train.num_targets, valid.num_targets, description,
        )
    train, valid = (windowed_stream(segments, config.window_size) for segments in (train_segments, valid_segments))
    check_sizes(train, valid)
    description = f"windows: {train.num_windows:,} training, {valid.num_windows:,} validation, {config.window_size} tokens each"
    return TrainingData(
        lambda first_epoch: training_windows(train, config.batch_size, seed, first_epoch),
        -(-train.num_windows // config.batch_size),
        windows_dataset(valid, config.batch_size),
        train.num_windows,
        valid.num_windows,
        description,
    )
