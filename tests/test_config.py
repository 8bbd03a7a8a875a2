from pathlib import Path

import pytest

from keras_rnnlm.config import Config, config_keys, config_to_dict, config_to_toml, load_config, reference_toml
from keras_rnnlm.errors import RnnlmError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_default_toml_is_the_reference_generated_from_the_config():
    """configs/default.toml is what python -m keras_rnnlm.config prints: every key once, in
    the dataclasses' order, its default, and the comment above its field in config.py."""
    text = (CONFIGS / "default.toml").read_text()
    assert text == reference_toml(), "configs/default.toml is out of date: python -m keras_rnnlm.config > configs/default.toml"
    assert load_config(CONFIGS / "default.toml") == Config()
    listed, section, comment = [], "", []
    for line in text.splitlines()[4:]:
        if line.startswith("["):
            section = line.strip("[]") + "."
        elif line.startswith("#"):
            comment.append(line)
        elif line:
            assert comment, f"no comment above {line}"
            listed.append(section + line.split("=")[0].strip())
            comment = []
    assert listed == config_keys()
    assert "# Units in each recurrent layer.\nunits = 256" in text


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda path: path.name)
def test_every_shipped_config_loads_and_names_its_run_after_its_file(path):
    config = load_config(path)
    assert config.name == ("psalms" if path.stem == "default" else path.stem)
    assert config_to_dict(config) != config_to_dict(Config()) or path.stem == "default"


def test_overrides_parse_toml_values_and_bare_words():
    config = load_config(None, ["model.units=64", "corpus.level=char", "train.precision=mixed", "corpus.paths=['a.txt']"])
    assert config.model.units == 64
    assert config.corpus.level == "char"
    assert config.train.precision == "mixed"
    assert config.corpus.paths == ("a.txt",)


def test_precision_must_be_a_known_choice():
    with pytest.raises(RnnlmError, match="train.precision = 'half' is not one of 'auto', 'float32', 'mixed'"):
        load_config(None, ["train.precision=half"])


def test_integer_is_accepted_where_a_float_is_expected():
    assert load_config(None, ["train.learning_rate=1"]).train.learning_rate == 1.0


def test_unknown_key_names_the_nearest_valid_one():
    with pytest.raises(RnnlmError, match=r"unknown config key model\.unit; did you mean model\.units\?"):
        load_config(None, ["model.unit=3"])
    with pytest.raises(RnnlmError, match=r"did you mean train\.learning_rate"):
        load_config(None, ["train.learnig_rate=0.1"])


def test_wrong_type_names_the_key():
    with pytest.raises(RnnlmError, match=r"model\.units must be an integer, got 'big'"):
        load_config(None, ["model.units=big"])
    with pytest.raises(RnnlmError, match=r"train\.epochs must be an integer, got True"):
        load_config(None, ["train.epochs=true"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.window_size=0", "data.window_size"),
        ("model.dropout=1.0", "model.dropout"),
        ("model.dropout=-0.1", "model.dropout"),
        ("model.units=0", "model.units"),
        ("train.learning_rate=0", "train.learning_rate"),
        ("data.batch_size=-1", "data.batch_size"),
        ("model.cell='transformer'", "model.cell"),
        ("data.bptt_steps=0", "data.bptt_steps"),
        ("data.mode='lanes'", "data.mode"),
        ("model.embedding_dropout=1.0", "model.embedding_dropout"),
    ],
)
def test_out_of_range_values_are_refused(override, key):
    with pytest.raises(RnnlmError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_bad_toml_file_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[model\nunits = 3\n")
    with pytest.raises(RnnlmError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(RnnlmError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_config_round_trips_through_toml(tmp_path):
    config = load_config(None, ["model.units=77", "corpus.paths=['x y.txt', 'b\"q.txt']", "train.sample_prompt='a\\nb'"])
    path = tmp_path / "config.toml"
    path.write_text(config_to_toml(config))
    assert load_config(path) == config


def test_one_window_size_at_either_level_and_the_old_character_key_is_refused():
    assert load_config(None, ["corpus.level=char", "data.window_size=24"]).data.window_size == 24
    assert load_config(CONFIGS / "names.toml").data.window_size == 16
    with pytest.raises(RnnlmError, match=r"unknown config key data\.char_window_size; did you mean data\.window_size\?"):
        load_config(None, ["data.char_window_size=24"])


def test_tied_embeddings_need_equal_sizes_and_bptt_needs_a_stream():
    with pytest.raises(RnnlmError, match=r"model.tie_embeddings needs model.embedding_dim \(128\) equal to model.units \(256\)"):
        load_config(None, ["model.tie_embeddings=true"])
    assert load_config(None, ["model.tie_embeddings=true", "model.units=128"]).model.tie_embeddings
    with pytest.raises(RnnlmError, match='data.mode = "bptt" reads the text as one running stream.*use data.mode = "windows"'):
        load_config(None, ["data.mode=bptt", "corpus.sequences=lines"])


def test_the_batch_size_left_at_0_is_the_modes_own_and_an_explicit_one_wins(tmp_path):
    assert load_config(None).data.batch_size == 256
    assert load_config(None, ["data.mode=bptt"]).data.batch_size == 32  # lanes: 256 starve a small corpus of steps
    assert load_config(CONFIGS / "default.toml", ["data.mode=bptt"]).data.batch_size == 32
    assert load_config(None, ["data.mode=bptt", "data.batch_size=256"]).data.batch_size == 256
    (tmp_path / "bptt.toml").write_text('[data]\nmode = "bptt"\nbatch_size = 8\n')
    assert load_config(tmp_path / "bptt.toml").data.batch_size == 8
    saved = config_to_dict(load_config(None, ["data.mode=bptt"]))
    assert saved["data"]["batch_size"] == 32  # a run's config.toml keeps the number it trained with
