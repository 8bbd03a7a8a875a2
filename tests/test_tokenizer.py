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


def test_detokenization_attaches_punctuation_and_restores_lines():
    tokenizer = Tokenizer()
    text = "bad blood, baby (now).\ndon't stop!"
    assert tokenizer.text_from_tokens(tokenizer.tokens_from_text(text)) == text


def test_character_detokenization_round_trips():
    tokenizer = Tokenizer(level="char", lowercase=False)
    text = "Tyrannosaurus\nVelociraptor\n"
    assert tokenizer.text_from_tokens(tokenizer.tokens_from_text(text)) == text
