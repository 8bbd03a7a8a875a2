import numpy as np
import pytest

from keras_rnnlm.shards import ShardedTokens


def write_shards(folder, ids, shard_tokens, dtype):
    files = []
    for number, start in enumerate(range(0, len(ids), shard_tokens)):
        files.append(folder / f"train-{number:05d}.bin")
        files[-1].write_bytes(ids[start : start + shard_tokens].astype(dtype).tobytes())
    return files


def test_sharded_tokens_gather_like_the_array_they_store(tmp_path):
    ids = np.random.default_rng(0).integers(0, 70_000, 10_007)
    tokens = ShardedTokens(write_shards(tmp_path, ids, 1000, "<u4"), np.dtype("<u4"), 1000, len(ids))
    positions = np.random.default_rng(1).integers(0, len(ids), (64, 6))  # windows across shard edges
    assert len(tokens) == 10_007
    assert tokens[positions].dtype == np.int32 and np.array_equal(tokens[positions], ids[positions])
    assert np.array_equal(np.concatenate(list(tokens.chunks(999))), ids)
    assert np.array_equal(tokens[2990:3010], ids[2990:3010])  # a run across shards, as a slice
    assert tokens[np.array([[5, 4], [3, 3]])].tolist() == [[ids[5], ids[4]], [ids[3], ids[3]]]  # any order, repeats


def test_a_position_outside_the_tokens_is_an_index_error(tmp_path):
    tokens = ShardedTokens(write_shards(tmp_path, np.arange(10), 4, "<u2"), np.dtype("<u2"), 4, 10)
    with pytest.raises(IndexError, match=r"must lie in \[0, 10\), got 3 to 10"):
        tokens[np.array([3, 10])]
