import functools

import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_rnnlm.tokenizer import LINE_BREAK, Tokenizer


def test_punctuation_becomes_its_own_token():
    assert Tokenizer().tokens_from_line("Bad blood, baby!") == ["bad", "blood", ",", "baby", "!"]


def test_apostrophes_stay_inside_words():
    assert Tokenizer().tokens_from_line("Don't you know it's the potter’s") == [
        "don't", "you", "know", "it's", "the", "potter’s",
    ]


def test_line_breaks_are_tokens():
    assert Tokenizer().tokens_from_text("one two\nthree\n") == ["one", "two", LINE_BREAK, "three", LINE_BREAK]
    assert Tokenizer().tokens_from_text("a\r\n\nb") == ["a", LINE_BREAK, LINE_BREAK, "b"]


def test_unicode_words_and_symbols():
    assert Tokenizer().tokens_from_line("Café naïve — Über 42€") == ["café", "naïve", "—", "über", "42", "€"]


def test_lowercasing_is_configurable():
    assert Tokenizer(lowercase=False).tokens_from_line("The LORD") == ["The", "LORD"]


def test_literal_unk_is_one_token():
    assert Tokenizer(lowercase=False).tokens_from_line("the <unk> of") == ["the", "<unk>", "of"]


def test_whitespace_split_trusts_pretokenized_text():
    assert Tokenizer(split="whitespace", lowercase=False).tokens_from_line(" 1 @,@ 000 <unk> . ") == [
        "1", "@,@", "000", "<unk>", ".",
    ]


def test_character_level_keeps_every_character():
    assert Tokenizer(level="char").tokens_from_text("Ab c\nd") == ["a", "b", " ", "c", LINE_BREAK, "d"]


def test_character_level_drops_carriage_returns_only_at_line_ends():
    assert Tokenizer(level="char").tokens_from_text("a\rb\r\r\nc\r") == ["a", "\r", "b", LINE_BREAK, "c"]


@pytest.mark.parametrize("tokenizer", [Tokenizer(), Tokenizer(split="whitespace"), Tokenizer(level="char")])
def test_line_break_can_stay_a_newline_for_encoding(tokenizer):
    text = "one, two\r\nthree\n"
    renamed = ["\n" if token == LINE_BREAK else token for token in tokenizer.tokens_from_text(text)]
    assert tokenizer.tokens_from_text(text, line_break="\n") == renamed


def test_detokenization_attaches_punctuation_and_restores_lines():
    tokenizer = Tokenizer()
    text = "bad blood, baby (now).\ndon't stop!"
    assert tokenizer.text_from_tokens(tokenizer.tokens_from_text(text)) == text


def test_character_detokenization_round_trips():
    tokenizer = Tokenizer(level="char", lowercase=False)
    text = "Tyrannosaurus\nVelociraptor\n"
    assert tokenizer.text_from_tokens(tokenizer.tokens_from_text(text)) == text


# Text as users write it, plus any Unicode character: letters, digits, apostrophes,
# punctuation, every kind of line break and space, and a literal <unk>.
TEXT = st.lists(
    st.one_of(
        st.sampled_from(list("aZé9_ '’,.!?;:-()[]{}…%\n\r\t\u00a0\u2028\u0301İΣß")),
        st.sampled_from(["<unk>", "<UNK>", "<eol>", "don't", "\r\n"]),
        st.characters(exclude_categories=["Cs"]),
    ),
    max_size=40,
).map("".join)
TOKENIZERS = [Tokenizer(), Tokenizer(level="char"), Tokenizer(split="whitespace"), Tokenizer(lowercase=False)]


@functools.cache
def graph_functions(tokenizer):
    """The graph tokenizer compiled as an exported model runs it."""
    tokens_from_texts = tf.function(
        tokenizer.graph_tokens_from_texts, input_signature=[tf.TensorSpec([None], tf.string)]
    )
    text_from_tokens = tf.function(
        tokenizer.graph_text_from_tokens, input_signature=[tf.RaggedTensorSpec([None, None], tf.string)]
    )
    return tokens_from_texts, text_from_tokens


@pytest.mark.parametrize("tokenizer", TOKENIZERS, ids=["word", "char", "whitespace", "cased"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXT, min_size=1, max_size=4))
def test_graph_tokenizer_matches_python(tokenizer, texts):
    tokens_from_texts, text_from_tokens = graph_functions(tokenizer)
    graph_tokens = [[token.decode() for token in row] for row in tokens_from_texts(tf.constant(texts)).to_list()]
    python_tokens = [tokenizer.tokens_from_text(text) for text in texts]
    assert graph_tokens == python_tokens

    graph_texts = [text.decode() for text in text_from_tokens(tf.ragged.constant(python_tokens, dtype=tf.string)).numpy()]
    assert graph_texts == [tokenizer.text_from_tokens(tokens) for tokens in python_tokens]
