import numpy as np

from keras_rnnlm.splits import split_random_lines


def test_random_line_split_is_seeded_and_disjoint():
    lines = [np.array([number, 2], np.int32) for number in range(3, 203)]
    train, valid = split_random_lines(lines, valid_fraction=0.1, seed=4)
    again = split_random_lines(lines, valid_fraction=0.1, seed=4)[1]
    other = split_random_lines(lines, valid_fraction=0.1, seed=5)[1]
    held_out = {int(line[0]) for line in valid}
    assert len(valid) == 20 and len(train) == 180
    assert held_out == {int(line[0]) for line in again} != {int(line[0]) for line in other}
    assert held_out.isdisjoint(int(line[0]) for line in train)
    assert held_out != set(range(183, 203))  # random lines, not the end of the list
