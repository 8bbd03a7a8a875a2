import numpy as np

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
    tokens.release()  # pages unmapped from the process: the next read maps them again
    assert np.array_equal(tokens[positions], ids[positions])


def test_reads_release_their_pages_as_they_go(tmp_path, monkeypatch):
    ids = np.arange(5000) % 600
    tokens = ShardedTokens(write_shards(tmp_path, ids, 5000, "<u2"), np.dtype("<u2"), 5000, len(ids))
    released = []
    monkeypatch.setattr(ShardedTokens, "RELEASE_EVERY", 100)
    monkeypatch.setattr(ShardedTokens, "release", lambda self: released.append(True) or setattr(self, "_read_since_release", 0))
    for start in range(0, 1000, 30):
        assert tokens[np.arange(start, start + 30)].tolist() == ids[start : start + 30].tolist()
    assert len(released) == 8  # every 100 positions read: 34 reads of 30
