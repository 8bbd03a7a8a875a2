import numpy as np

from keras_rnnlm.data import training_windows, windowed_stream, windows_dataset
from keras_rnnlm.splits import TRAIN, VALID, Segments, line_ends, segment_plan
from keras_rnnlm.vocab import PAD_ID


def all_examples(stream, batch_size=4, seed=None, epoch=0):
    """Every (window, target) of one pass in order, or of the given epoch of training."""
    if seed is None:
        dataset = windows_dataset(stream, batch_size)
    else:
        steps = -(-stream.num_windows // batch_size)
        dataset = training_windows(stream, batch_size, seed, first_step=epoch * steps).take(steps)
    windows, targets = [], []
    for window_batch, target_batch in dataset:
        windows.append(window_batch.numpy())
        targets.append(target_batch.numpy())
    return np.concatenate(windows), np.concatenate(targets)


def test_the_target_is_the_token_after_the_window():
    # "cause baby now we got bad blood" as ids 10..16.
    stream = windowed_stream([np.arange(10, 17, dtype=np.int32)], window_size=5)
    windows, targets = all_examples(stream)
    assert windows.dtype == np.int32 and windows.shape == (7, 5)
    assert list(windows[5]) == [10, 11, 12, 13, 14] and targets[5] == 15  # cause baby now we got -> bad
    assert list(windows[6]) == [11, 12, 13, 14, 15] and targets[6] == 16


def test_the_start_of_a_file_is_left_padded():
    stream = windowed_stream([np.array([7, 8, 9], dtype=np.int32)], window_size=4)
    windows, targets = all_examples(stream)
    assert windows.tolist() == [[PAD_ID] * 4, [PAD_ID] * 3 + [7], [PAD_ID] * 2 + [7, 8]]
    assert targets.tolist() == [7, 8, 9]


def test_windows_never_reach_into_another_segment():
    stream = windowed_stream([np.array([3, 4, 5], np.int32), np.array([6, 7], np.int32)], window_size=2)
    windows, targets = all_examples(stream)
    assert targets.tolist() == [3, 4, 5, 6, 7]
    assert windows[3].tolist() == [PAD_ID, PAD_ID]  # The second segment starts afresh.


def test_shuffled_examples_are_the_same_examples_across_many_segments():
    rng = np.random.default_rng(0)
    segments = [rng.integers(3, 50, size, dtype=np.int32) for size in (1, 0, 7, 2, 0, 30, 1, 12)]
    stream = windowed_stream(segments, window_size=4)
    assert stream.num_windows == 53 and stream.target_ids().tolist() == np.concatenate(segments).tolist()
    in_order = sorted(map(tuple, np.column_stack(all_examples(stream)).tolist()))
    shuffled = sorted(map(tuple, np.column_stack(all_examples(stream, batch_size=5, seed=3)).tolist()))
    assert shuffled == in_order


def test_shuffling_is_seeded_and_covers_every_example_once():
    stream = windowed_stream([np.arange(3, 103, dtype=np.int32)], window_size=3)
    first = all_examples(stream, batch_size=7, seed=5)
    again = all_examples(stream, batch_size=7, seed=5)
    assert np.array_equal(first[1], again[1])
    assert not np.array_equal(first[1], np.arange(3, 103))
    assert sorted(first[1].tolist()) == list(range(3, 103))
    for window, target in zip(*first):  # Shuffled examples stay whole.
        assert window.tolist() == [t if t >= 3 else PAD_ID for t in range(target - 3, target)]


def test_every_epoch_has_its_own_order_in_whole_batches_and_a_resumed_run_reads_the_same():
    stream = windowed_stream([np.arange(3, 103, dtype=np.int32)], window_size=3)
    training = training_windows(stream, batch_size=7, seed=5)
    epochs = [np.concatenate([targets.numpy() for _, targets in training.take(15 * 3)][15 * n : 15 * (n + 1)]) for n in range(3)]
    assert [len(targets) for _, targets in training.take(15)] == [7] * 14 + [2]
    assert all(sorted(epoch.tolist()) == list(range(3, 103)) for epoch in epochs)  # each example once an epoch
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    resumed = np.concatenate([targets.numpy() for _, targets in training_windows(stream, 7, seed=5, first_step=30).take(15)])
    assert np.array_equal(resumed, epochs[2])  # epoch 2 of a run resumed there = epoch 2 of the whole run
    mid_epoch = np.concatenate([targets.numpy() for _, targets in training_windows(stream, 7, seed=5, first_step=19).take(12)])
    assert np.array_equal(mid_epoch, np.concatenate(epochs)[100 + 4 * 7 : 100 + 4 * 7 + 79])  # batch 4 of epoch 1 to its end, then epoch 2 begins
    assert np.array_equal(all_examples(stream, 7, seed=5, epoch=1)[1], epochs[1])


def test_validation_is_the_end_of_each_document_and_never_in_training_windows():
    stream = np.concatenate([np.arange(100, 200, dtype=np.int32), np.arange(300, 340, dtype=np.int32)])
    ends, labels = segment_plan([100, 40], 2, "stream", valid_fraction=0.1, seed=0)
    train, valid = (Segments.from_plan(stream, ends, labels, label) for label in (TRAIN, VALID))
    assert valid.tokens.tolist() == list(range(190, 200)) + list(range(336, 340))
    windows, targets = all_examples(windowed_stream(train, window_size=5), batch_size=32)
    seen_in_training = set(windows.ravel().tolist()) | set(targets.tolist())
    assert seen_in_training.isdisjoint(set(valid.tokens.tolist()))


def test_line_mode_windows_never_cross_a_line_and_end_on_the_line_break():
    from keras_rnnlm.vocab import LINE_BREAK_ID as EOL

    # Two lines, "a b" and "c d e", with a blank line between them.
    stream = np.array([3, 4, EOL, EOL, 5, 6, 7, EOL, 8, EOL], np.int32)  # the last line: a separate validation file
    ends, labels = segment_plan([8, 2], 1, "lines", 0.1, seed=0, line_ends=line_ends(stream))
    lines = Segments.from_plan(stream, ends, labels, TRAIN)
    assert lines.tokens.tolist() == [3, 4, EOL, 5, 6, 7, EOL] and lines.ends.tolist() == [3, 7]  # the blank line is dropped
    windows, targets = all_examples(windowed_stream(lines, window_size=3), batch_size=16)
    assert targets.tolist() == [3, 4, EOL, 5, 6, 7, EOL]
    assert windows[3].tolist() == [PAD_ID, PAD_ID, PAD_ID]  # the first window of line 2: only padding
    assert windows[2].tolist() == [PAD_ID, 3, 4]  # the end token follows the line's last token
    assert windows[6].tolist() == [5, 6, 7]


def test_lanes_make_every_token_a_target_exactly_once_in_order():
    from keras_rnnlm.data import lanes, lanes_dataset
    from keras_rnnlm.vocab import LINE_BREAK_ID as EOL

    text = [np.arange(10, 40, dtype=np.int32), np.arange(50, 63, dtype=np.int32)]  # 43 tokens, two documents
    laid_out = lanes(text, num_lanes=4, bptt_steps=3)
    assert laid_out.num_targets == 43 and laid_out.num_lanes == 4
    assert laid_out.num_steps == 4  # lanes of 12: 11 tokens each (43 / 4, rounded up) in whole steps of 3
    batches = list(lanes_dataset(laid_out))
    assert len(batches) == 4 and all(part.shape == (4, 3) for batch in batches for part in batch)
    inputs, targets, weights = (np.concatenate([batch[part].numpy() for batch in batches], axis=1) for part in range(3))
    stream = np.concatenate([[EOL], *text])
    assert inputs[0, 0] == EOL  # the text is read as after a line break
    for lane in range(4):  # each lane reads its slice in order: the input before each target is its predecessor
        for position in range(12):
            if weights[lane, position]:
                index = lane * 12 + position + 1
                assert targets[lane, position] == stream[index] and inputs[lane, position] == stream[index - 1]
    assert sorted(targets[weights == 1].tolist()) == sorted(np.concatenate(text).tolist())  # each once
    assert weights.sum() == 43 and set(targets[weights == 0].tolist()) == {PAD_ID}


def test_workers_read_disjoint_shares_of_every_batch_that_together_are_the_batch():
    stream = windowed_stream([np.arange(3, 103, dtype=np.int32)], window_size=3)
    whole = [targets.numpy() for _, targets in training_windows(stream, batch_size=8, seed=5).take(26)]  # two passes
    shares = [[targets.numpy() for _, targets in training_windows(stream, 8, seed=5, shard=(index, 3)).take(26)] for index in range(3)]
    for number, batch in enumerate(whole):
        parts = [share[number] for share in shares]
        assert np.array_equal(np.concatenate(parts), batch)  # in order, none twice, none left out
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # 8 -> 2, 3, 3; the pass' last batch of 4 -> 1, 1, 2
    resumed = [targets.numpy() for _, targets in training_windows(stream, 8, seed=5, first_step=13, shard=(1, 3)).take(13)]
    assert all(np.array_equal(a, b) for a, b in zip(resumed, shares[1][13:], strict=True))


def test_datasets_run_without_autotune_whose_thread_stalled_their_destruction():
    """tf.data's autotune thread made destroying an iterator wait up to 60 s at random (a
    finished run's exit, Keras' validation every epoch): every dataset training reads turns it off."""
    from keras_rnnlm.config import DataConfig
    from keras_rnnlm.data import training_data

    tokens = [np.arange(3, 400, dtype=np.int32)]
    for config in (DataConfig(batch_size=8), DataConfig(mode="bptt", batch_size=2, bptt_steps=5)):
        data = training_data(config, tokens, tokens, seed=0)
        for dataset in (data.train(0), data.valid):
            options = dataset.options()
            assert options.autotune.enabled is False and options.experimental_optimization.map_parallelization is False


def test_the_log_says_when_bptt_mode_chose_the_lanes():
    from keras_rnnlm.config import DataConfig
    from keras_rnnlm.data import training_data

    text = [np.arange(10, 5000, dtype=np.int32)]
    chosen = training_data(DataConfig(mode="bptt", bptt_steps=5), text, text, seed=0).description
    given = training_data(DataConfig(mode="bptt", bptt_steps=5, batch_size=8), text, text, seed=0).description
    assert chosen.startswith("lanes: 32 lanes (data.batch_size; bptt mode's default)")
    assert given.startswith("lanes: 8 lanes (data.batch_size)")
