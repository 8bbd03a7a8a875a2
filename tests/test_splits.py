"""The one split of a corpus into training and validation segments."""

import numpy as np
import pytest
from conftest import small_config

from keras_rnnlm.config import DataConfig
from keras_rnnlm.corpus import find_documents
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.splits import (
    DROPPED, TRAIN, VALID, Segments, check_text_sizes, corpus_segments, line_ends, segment_plan, segments_for_evaluation,
    text_sizes,
)
from keras_rnnlm.vocab import LINE_BREAK_ID as EOL


def test_validation_is_the_end_of_every_document_or_the_separate_documents():
    ends, labels = segment_plan([100, 40], 2, "stream", 0.1, seed=0)
    assert ends.tolist() == [90, 100, 136, 140] and labels.tolist() == [TRAIN, VALID, TRAIN, VALID]
    ends, labels = segment_plan([100, 40, 7], 2, "stream", 0.1, seed=0)  # the third document validates
    assert ends.tolist() == [100, 140, 147] and labels.tolist() == [TRAIN, TRAIN, VALID]
    stream = np.arange(147, dtype=np.int32)
    valid = Segments.from_plan(stream, ends, labels, VALID)
    assert valid.tokens.tolist() == list(range(140, 147)) and valid.ends.tolist() == [7]


def test_line_mode_drops_blank_lines_and_holds_out_seeded_random_lines():
    lines = [np.array([number, EOL], np.int32) for number in range(3, 203)]
    stream = np.concatenate([np.array([EOL], np.int32), *lines])  # a blank line first
    ends, labels = segment_plan([len(stream)], 1, "lines", 0.1, seed=4, line_ends=line_ends(stream))
    assert labels[0] == DROPPED and np.count_nonzero(labels == VALID) == 20 and np.count_nonzero(labels == TRAIN) == 180
    held_out = set(Segments.from_plan(stream, ends, labels, VALID).tokens.tolist()) - {EOL}
    again = segment_plan([len(stream)], 1, "lines", 0.1, seed=4, line_ends=line_ends(stream))[1]
    other = segment_plan([len(stream)], 1, "lines", 0.1, seed=5, line_ends=line_ends(stream))[1]
    assert again.tolist() == labels.tolist() != other.tolist()
    assert held_out.isdisjoint(Segments.from_plan(stream, ends, labels, TRAIN).tokens.tolist())
    assert held_out != set(range(183, 203))  # random lines, not the end of the list


def test_line_mode_with_a_separate_validation_file():
    corpus, valid = np.array([3, 4, EOL, EOL, 5, EOL], np.int32), np.array([8, EOL, 9, EOL], np.int32)
    stream = np.concatenate([corpus, valid])
    ends, labels = segment_plan([6, 4], 1, "lines", 0.1, seed=0, line_ends=line_ends(stream))
    assert ends.tolist() == [3, 4, 6, 8, 10] and labels.tolist() == [TRAIN, DROPPED, TRAIN, VALID, VALID]


def test_evaluation_scores_whole_documents_or_every_line():
    documents = [np.array([3, 4, EOL], np.int32), np.array([5, EOL, EOL, 6, EOL], np.int32)]
    assert segments_for_evaluation(documents, "stream").ends.tolist() == [3, 8]
    lines = segments_for_evaluation(documents, "lines")
    assert lines.tokens.tolist() == [3, 4, EOL, 5, EOL, 6, EOL] and lines.ends.tolist() == [3, 5, 7]


def test_a_text_too_short_for_one_example_or_without_validation_is_refused():
    with pytest.raises(RnnlmError, match="only 3 training tokens, fewer than window_size \\+ 1 = 6"):
        check_text_sizes(DataConfig(window_size=5), 3, 1)
    with pytest.raises(RnnlmError, match=r"only 19 training tokens, fewer than data.batch_size x data.bptt_steps = 4 x 5"):
        check_text_sizes(DataConfig(mode="bptt", batch_size=4, bptt_steps=5), 19, 5)
    check_text_sizes(DataConfig(mode="bptt", batch_size=4, bptt_steps=5), 20, 5)
    with pytest.raises(RnnlmError, match="validation split is empty"):
        check_text_sizes(DataConfig(), 20, 0)


@pytest.mark.parametrize("sequences", ["stream", "lines"])
def test_text_sizes_are_counted_as_the_split_makes_them(tmp_path, sequences):
    (tmp_path / "a.txt").write_text("one two three\n\nfour five\nsix\n" * 7, encoding="utf-8")
    (tmp_path / "b.txt").write_text("seven eight nine ten\n" * 3, encoding="utf-8")
    config = small_config([tmp_path], corpus={"sequences": sequences})
    train, valid, _ = corpus_segments(config, find_documents(config.corpus.paths))
    assert text_sizes(config, find_documents(config.corpus.paths)) == (train.num_tokens, valid.num_tokens)
