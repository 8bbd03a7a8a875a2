"""export --format web: the page's JavaScript model (keras_rnnlm/page/rnnlm.js), run in
Node.js, against Keras and the Python tokenizer; the folder the export writes. The same
page in a real browser: tests/test_browser.py."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from keras_rnnlm import cli
from keras_rnnlm.config import config_from_dict, config_to_dict
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.files import Owned
from keras_rnnlm.generate import Generator
from keras_rnnlm.runs import RunFolder
from keras_rnnlm.sampling import Sampling
from keras_rnnlm.tokenizer import Tokenizer
from keras_rnnlm.web import export_web, model_manifest
from conftest import small_config, trained_once

HARNESS = Path(__file__).parent / "web" / "harness.js"
NODE = shutil.which("node")
# CI sets it: there a missing Node.js fails the tests instead of skipping them.
needs_node = pytest.mark.skipif(not NODE and not os.environ.get("KERAS_RNNLM_BROWSER_TESTS"),
                                reason="Node.js is not installed (the page's model is checked in it)")
PROMPTS = {"word": ["cause baby now we got", "", "You KNOW, it used zebra"], "char": ["an", "", "Hann"]}


def node(request: dict) -> list:
    assert NODE, "Node.js is needed: apt-get install nodejs"
    done = subprocess.run([NODE, str(HARNESS)], input=json.dumps(request), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def variants(song_run, names_run, bptt_run, char_bptt_run, corpora, shared):
    """Runs of every kind the page runs: word and character level, windows and bptt mode,
    tied and untied, LSTM, GRU and SimpleRNN, with and without layer normalization."""
    simple = small_config([corpora / "song.txt"], model={"cell": "simple_rnn", "layer_norm": True}, train={"epochs": 1})
    return {
        "word, windows, lstm": (song_run, "word"),
        "char, windows, lines": (names_run, "char"),
        "word, bptt, tied": (bptt_run, "word"),
        "char, bptt, gru, 2 layers, layer norm": (char_bptt_run, "char"),
        "word, windows, simple_rnn, layer norm": (trained_once(shared, "web_simple_rnn", simple), "word"),
    }


@needs_node
@pytest.mark.parametrize("kind", ["word, windows, lstm", "char, windows, lines", "word, bptt, tied",
                                  "char, bptt, gru, 2 layers, layer norm",
                                  pytest.param("word, windows, simple_rnn, layer norm", marks=pytest.mark.slow)])
def test_the_page_model_predicts_and_writes_what_keras_does(variants, kind, tmp_path):
    run, level = variants[kind]
    folder = export_web(run, tmp_path / "web")
    prompts = PROMPTS[level]
    answers = node({"folder": str(folder), "prompts": prompts, "numTokens": 50})
    generator = Generator.from_run(run)
    for prompt, answer in zip(prompts, answers):
        windows = generator.windows_from_prompts([prompt])
        probabilities = generator.model.predict(windows, verbose=0)
        probabilities = probabilities[0] if generator.window_size else probabilities[0, -1]
        np.testing.assert_allclose(answer["probabilities"], probabilities, atol=1e-4, rtol=0)
        [greedy] = generator.generate([prompt], 50, Sampling(temperature=0.0))
        assert answer["text"] == greedy
        assert len(answer["greedy"]) == 50 or (generator.line_mode and answer["greedy"][-1] == 2)  # a name ends at its line break
        ranked = [generator.vocabulary.tokens[i] for i in np.argsort(-probabilities) if i > 1][:3]
        assert [word["word"] for word in answer["nextWords"]] == ranked


@needs_node
@pytest.mark.parametrize("settings", [dict(level="word", split="punctuation", lowercase=True),
                                      dict(level="word", split="punctuation", lowercase=False),
                                      dict(level="word", split="whitespace", lowercase=False),
                                      dict(level="char", split="punctuation", lowercase=True)])
def test_the_page_tokenizes_and_joins_text_as_python_does(settings, song_run):
    texts = ["Cause baby, now we've got bad blood!\r\nYou know (it used) to be mad love…",
             "L'École naïve’s café_2 costs 3.14€ -- «vraiment»?\n\nΟδυσσέας 東京 x²",
             "<unk> tabs\tand  spaces; 'quoted' \"twice\"", ""]
    tokenizer = Tokenizer(**settings)
    answers = node({"folder": str(Path(__file__).parent.parent / "keras_rnnlm" / "page"), "tokenize": settings, "texts": texts})
    for text, answer in zip(texts, answers):
        tokens = tokenizer.tokens_from_text(text)
        assert answer["tokens"] == tokens
        assert answer["text"] == tokenizer.text_from_tokens(tokens)
        assert answer["appended"] == answer["text"]  # the page's token-by-token text reads as the whole


def test_the_export_folder_holds_the_page_and_the_weights_once(bptt_run, tmp_path, capsys):
    out = tmp_path / "site"
    assert cli.main("export", ["--model", str(bptt_run), "--format", "web", "--out", str(out)]) == 0
    assert {path.name for path in out.iterdir()} >= {"index.html", "rnnlm.js", "model.json", "weights.bin", "README.txt"}
    manifest = json.loads((out / "model.json").read_text(encoding="utf-8"))
    model = RunFolder(bptt_run).load_model()
    assert manifest["tied"]  # the output layer reads the embedding matrix: stored once
    assert (out / "weights.bin").stat().st_size == 4 * (model.count_params() - model.get_layer("next_token").kernel.shape.num_elements())
    assert manifest["vocabulary"] == RunFolder(bptt_run).vocabulary.read_text(encoding="utf-8").splitlines()
    assert oct(out.stat().st_mode & 0o777) == oct(0o755)  # a web server running as another user reads it
    assert "python -m http.server" in capsys.readouterr().err


def test_export_web_replaces_its_own_folder_and_refuses_others(song_run, tmp_path, capsys):
    out = tmp_path / "site"
    export_web(song_run, out)
    (out / "weights.bin").write_bytes(b"")
    assert cli.main("export", ["--model", str(song_run), "--format", "web", "--out", str(out)]) == 0
    assert (out / "weights.bin").stat().st_size > 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me", encoding="utf-8")
    assert cli.main("export", ["--model", str(song_run), "--format", "web", "--out", str(mine)]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text(encoding="utf-8") == "keep me"
    saved_model = tmp_path / "saved"
    Owned(saved_model, "export").claim()  # as export --format saved_model leaves it
    assert cli.main("export", ["--model", str(song_run), "--format", "web", "--out", str(saved_model)]) == 2
    assert "not a web export" in capsys.readouterr().err


def test_a_model_with_attention_is_refused_in_one_line(song_run):
    values = config_to_dict(RunFolder(song_run).load_config())
    values["data"]["mode"], values["model"]["attention"] = "bptt", True
    with pytest.raises(RnnlmError, match=r"does not run attention .* export a SavedModel"):
        model_manifest(None, config_from_dict(values))
