import numpy as np

from keras_rnnlm.corpus import Document
from keras_rnnlm.tokenizer import Tokenizer
from keras_rnnlm.vocab import LINE_BREAK_ID, UNK_ID, Vocabulary, build_vocabulary, encode_documents


def test_most_frequent_first_after_reserved_tokens_ties_in_first_seen_order():
    vocabulary, (ids,) = build_vocabulary([Document("d", text="b a b c a b d")], Tokenizer(), max_size=100)
    assert vocabulary.tokens == ["<pad>", "<unk>", "<eol>", "b", "a", "c", "d"]
    assert vocabulary.tokens_from_ids(ids) == "b a b c a b d".split() + ["<eol>"]


def test_max_size_and_min_count_send_rare_tokens_to_unk():
    text = "a a a b b c"
    vocabulary, (ids,) = build_vocabulary([Document("d", text=text)], Tokenizer(), max_size=4)
    assert vocabulary.tokens == ["<pad>", "<unk>", "<eol>", "a"]
    assert list(ids) == [3, 3, 3, UNK_ID, UNK_ID, UNK_ID, LINE_BREAK_ID]
    vocabulary, _ = build_vocabulary([Document("d", text=text)], Tokenizer(), max_size=100, min_count=2)
    assert vocabulary.tokens[3:] == ["a", "b"]


def test_literal_unk_keeps_the_unk_id():
    vocabulary, (ids,) = build_vocabulary([Document("d", text="the <unk> of <unk>")], Tokenizer(), max_size=100)
    assert "<unk>" not in vocabulary.tokens[3:]
    assert list(ids) == [3, UNK_ID, 4, UNK_ID, LINE_BREAK_ID]


def test_saved_vocabulary_keeps_every_id(tmp_path):
    vocabulary, _ = build_vocabulary([Document("d", text="don't , stop\nnaïve 42 ,")], Tokenizer(), max_size=100)
    vocabulary.save(tmp_path / "vocabulary.txt")
    loaded = Vocabulary.load(tmp_path / "vocabulary.txt")
    assert loaded == vocabulary
    assert [loaded.id_from_token(t) for t in vocabulary.tokens] == list(range(len(vocabulary)))
    assert not list(tmp_path.glob("*.tmp"))


def test_fixed_vocabulary_encodes_unknown_words_as_unk():
    vocabulary = Vocabulary(["<pad>", "<unk>", "<eol>", "baby", "now"])
    (ids,) = encode_documents([Document("d", text="baby now never")], Tokenizer(), vocabulary)
    assert ids.dtype == np.int32
    assert list(ids) == [3, 4, UNK_ID, LINE_BREAK_ID]


def test_extending_a_trained_models_vocabulary_keeps_its_ids_and_adds_the_frequent_new_tokens(caplog):
    from keras_rnnlm.tokenizer import RESERVED_TOKENS
    from keras_rnnlm.vocab import UNK_ID, Vocabulary, vocabulary_from_counts

    base = Vocabulary([*RESERVED_TOKENS, "a", "b"])
    types = [*RESERVED_TOKENS, "c", "a", "d", "e"]
    counts = np.array([0, 0, 4, 5, 1, 3, 1])  # "a" is rare here, "b" absent: both keep their ids
    with caplog.at_level("INFO", logger="keras_rnnlm"):
        vocabulary, final_ids = vocabulary_from_counts(types, counts, max_size=7, min_count=2, base=base)
    assert vocabulary.tokens == [*RESERVED_TOKENS, "a", "b", "c", "d"]
    assert final_ids.tolist() == [0, 1, 2, 5, 3, 6, UNK_ID]
    assert "2 tokens added to the 5 of the model started from; <unk> 64.29% of the corpus with its vocabulary, 7.14% now" in caplog.text
    assert vocabulary_from_counts(types, counts, max_size=6, min_count=2, base=base)[0].tokens[-1] == "c"  # the most frequent
    assert "left out" not in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="keras_rnnlm"):
        assert vocabulary_from_counts(types, counts, max_size=5, min_count=1, base=base)[0] == base  # full: nothing added
    assert ("3 more of your text's tokens (seen vocab.min_count times) were left out as <unk>: the vocabulary may hold "
            "vocab.max_size = 5 tokens; --set vocab.max_size=8 adds them all") in caplog.text
