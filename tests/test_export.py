import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from keras_rnnlm import cli
from keras_rnnlm.export import SIGNATURES, export_run
from keras_rnnlm.generate import Generator
from keras_rnnlm.sampling import Sampling

# Exporting three runs as SavedModels takes half a minute of the suite's three: CI runs these after it.
pytestmark = pytest.mark.slow

# Runs in a fresh process that cannot import keras or keras_rnnlm: it reads requests
# (SavedModel folder, signature name, inputs) as JSON on stdin and prints each result, or
# the error's message.
SERVER = textwrap.dedent("""
    import json, sys
    sys.modules["keras"] = None        # importing them now fails
    sys.modules["keras_rnnlm"] = None
    import tensorflow as tf

    exported, results = {}, []
    for folder, name, inputs in json.load(sys.stdin):
        if folder not in exported:
            exported[folder] = tf.saved_model.load(folder)
        signature = exported[folder].signatures[name]
        specs = signature.structured_input_signature[1]
        try:
            outputs = signature(**{key: tf.constant(value, specs[key].dtype) for key, value in inputs.items()})
        except tf.errors.InvalidArgumentError as error:
            results.append({"error": error.message})
            continue
        results.append({key: value.numpy().tolist() for key, value in outputs.items()})
    print(json.dumps(results, default=lambda value: value.decode()))
""")


def generate_request(prompts, num_words, temperature=1.0, top_k=0, top_p=1.0, seed=0, max_lines=0):
    return ["generate", {"prompts": prompts, "num_words": num_words, "temperature": temperature, "top_k": top_k,
                         "top_p": top_p, "seed": seed, "max_lines": max_lines}]


@pytest.fixture(scope="module")
def runs(song_run, names_run, bptt_run, tmp_path_factory):
    """The session's song, names and bptt runs, each exported."""
    folder = tmp_path_factory.mktemp("export")
    for name, run in (("song", song_run), ("names", names_run), ("bptt", bptt_run)):
        export_run(run, folder / name / "saved_model")
        (folder / name / "run").symlink_to(run)
    return folder


PROMPTS = ["cause baby now we got", "", "You KNOW, it used", "zebra quokka", "cause baby now we got bad blood you know it"]
SETTINGS = [
    dict(temperature=0.0),
    dict(temperature=1.5, seed=3),
    dict(temperature=0.8, top_k=3, seed=4),
    dict(temperature=2.0, top_p=0.8, seed=5, max_lines=1),
]
NAME_PROMPTS = ["", "hann", "Em"] * 4
BPTT_PROMPTS = ["the cat sat on the mat\nthe cat sat on the", "", "the cat sat on the hat\nthe cat", "dog"]
TEXTS = ["cause baby now we", "", "zebra"]
BAD_REQUESTS = [
    generate_request(["cause baby", "", "zebra zebra zebra"], 0),  # 0 words: the prompt back
    generate_request([], 5),  # an empty batch
    generate_request(["cause"], 1_000_000),
    generate_request(["cause"], -1),
    generate_request(["cause"], 5, temperature=-1.0),
    generate_request(["cause"], 5, top_k=-1),
    generate_request(["cause"], 5, top_k=10_000),
    generate_request(["cause"], 5, top_p=0.0),
    generate_request(["cause"], 5, top_p=1.5),
    generate_request(["cause"], 5, max_lines=-2),
    ["next_words", {"texts": ["cause"], "k": 0}],
    ["next_words", {"texts": ["cause"], "k": 17}],
    ["next_words", {"texts": ["", "zebra"], "k": 16}],  # every word the model knows
]


@pytest.fixture(scope="module")
def song(runs):
    return Generator.from_run(runs / "song" / "run")


@pytest.fixture(scope="module")
def bptt(runs):
    return Generator.from_run(runs / "bptt" / "run")


@pytest.fixture(scope="module")
def served(runs, song, bptt):
    """What the exported models answer to every test's requests, all sent to one process
    that has only TensorFlow: {test: [result, ...]}."""
    requests = {
        "generate": [("song", generate_request(PROMPTS, 15, **settings)) for settings in SETTINGS],
        "names": [("names", generate_request(NAME_PROMPTS, 30, 0.9, seed=2, max_lines=1))],
        "next_words": [("song", ["next_words", {"texts": TEXTS, "k": 4}]),
                       ("song", ["serving_default", {"windows": song.windows_from_prompts(TEXTS).tolist()}])],
        "bad": [("song", request) for request in BAD_REQUESTS],
        "bptt": [("bptt", generate_request(BPTT_PROMPTS, 40, **settings)) for settings in SETTINGS]
        + [("bptt", ["next_words", {"texts": BPTT_PROMPTS, "k": 2}]),
           ("bptt", ["serving_default", {"ids": bptt.windows_from_prompts(BPTT_PROMPTS).tolist()}])],
    }
    flat = [[str(runs / model / "saved_model"), *request] for test in requests.values() for model, request in test]
    result = subprocess.run([sys.executable, "-c", SERVER], input=json.dumps(flat), capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    results = iter(json.loads(result.stdout))
    return {test: [next(results) for _ in test_requests] for test, test_requests in requests.items()}


def test_exported_generate_writes_exactly_what_the_generator_writes(served, song):
    for settings, result in zip(SETTINGS, served["generate"], strict=True):
        sampling = Sampling(settings["temperature"], settings.get("top_k", 0), settings.get("top_p", 1.0))
        expected = song.generate(PROMPTS, 15, sampling, seed=settings.get("seed", 0), max_lines=settings.get("max_lines", 0))
        assert result["texts"] == expected
    assert served["generate"][0]["texts"][0] == "cause baby now we got bad blood\nyou know it used to be mad love\ncause baby now"


def test_exported_line_mode_names_stop_at_the_line_end(served, runs):
    generator = Generator.from_run(runs / "names" / "run")
    (result,) = served["names"]
    assert result["texts"] == generator.generate(NAME_PROMPTS, 30, Sampling(temperature=0.9), seed=2)
    assert all(text.endswith("\n") and "\n" not in text[:-1] for text in result["texts"])


def test_next_words_and_serving_default_agree_with_the_keras_model(served, song):
    next_words, serving_default = served["next_words"]
    probabilities = song.model(song.windows_from_prompts(TEXTS), training=False).numpy()  # (3, vocabulary)
    np.testing.assert_allclose(serving_default["probabilities"], probabilities, atol=1e-5)

    choosable = probabilities.copy()
    choosable[:, :2] = -1  # <pad> and <unk> are left out
    best = np.argsort(-choosable, axis=1, kind="stable")[:, :4]
    np.testing.assert_allclose(next_words["probabilities"], np.take_along_axis(probabilities, best, axis=1), atol=1e-5)
    assert [words[0] for words in next_words["words"]] == [song.vocabulary.tokens[i] for i in best[:, 0]]
    assert next_words["words"][0][0] == "got"


def test_bad_inputs_get_a_defined_result_or_a_clear_error(served):
    results = served["bad"]
    assert results[0] == {"texts": ["cause baby", "", "zebra zebra zebra"]}
    assert results[1] == {"texts": []}
    messages = [result.get("error", "") for result in results[2:12]]
    for expected, message in zip(
        ["num_words must be at most 100000", "num_words must be 0 or more", "temperature must be 0 (greedy) or more",
         "top_k must be 0 (keep all) or more", "top_k must be at most 18", "top_p must be in (0, 1]",
         "top_p must be in (0, 1]", "max_lines must be 0 (no limit) or more", "k must be at least 1",
         "k must be at most 16"],
        messages,
        strict=True,
    ):
        assert expected in message
    assert {"<pad>", "<unk>"}.isdisjoint(results[12]["words"][0]) and len(set(results[12]["words"][1])) == 16


def test_saved_model_cli_lists_the_signatures(runs):
    cli_path = Path(sys.executable).with_name("saved_model_cli")
    result = subprocess.run([str(cli_path), "show", "--dir", str(runs / "song" / "saved_model"), "--all"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in SIGNATURES:
        assert f"signature_def['{name}']" in result.stdout
    for name in ("prompts", "num_words", "temperature", "top_k", "top_p", "seed", "max_lines", "texts", "words", "windows"):
        assert f"['{name}']" in result.stdout


def test_the_export_folder_describes_its_signatures(runs):
    readme = (runs / "song" / "saved_model" / "README.txt").read_text()
    assert "window_size 5 (the model reads the last 5 tokens); vocabulary_size 18" in readme
    assert all(name in readme for name in SIGNATURES)


def test_cli_replaces_an_earlier_export_and_refuses_other_folders(runs, tmp_path, capsys):
    out = tmp_path / "exported"
    assert cli.main("export", ["--model", str(runs / "song" / "run"), "--out", str(out)]) == 0
    first = (out / "saved_model.pb").stat().st_mtime_ns
    assert cli.main("export", ["--model", str(runs / "song" / "run"), "--out", str(out)]) == 0
    assert (out / "saved_model.pb").stat().st_mtime_ns != first  # replaced: it held only the first export
    assert [path.name for path in tmp_path.iterdir()] == ["exported"]  # no temporary folders left
    (out / "mine.txt").write_text("a file of the user's")
    capsys.readouterr()
    assert cli.main("export", ["--model", str(runs / "song" / "run"), "--out", str(out)]) == 2
    assert "holds mine.txt, which keras_rnnlm did not write; choose another --out" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "a file of the user's"

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.md").write_text("mine")
    assert cli.main("export", ["--model", str(runs / "song" / "run"), "--out", str(tmp_path / "notes")]) == 2
    assert "holds todo.md, which keras_rnnlm did not write" in capsys.readouterr().err
    assert cli.main("export", ["--model", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "is not a keras_rnnlm run" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_bptt_models_export_writes_what_its_generator_writes_and_reads_whole_texts(served, bptt):
    *generated, next_words, serving_default = served["bptt"]
    for settings, result in zip(SETTINGS, generated, strict=True):
        sampling = Sampling(settings["temperature"], settings.get("top_k", 0), settings.get("top_p", 1.0))
        expected = bptt.generate(BPTT_PROMPTS, 40, sampling, seed=settings.get("seed", 0), max_lines=settings.get("max_lines", 0))
        assert result["texts"] == expected
    assert generated[0]["texts"][0].splitlines()[2] == "the cat sat on the mat"  # the state carried from the prompt
    ids = bptt.windows_from_prompts(BPTT_PROMPTS)  # whole prompts after a line break, left-padded
    assert ids[1].tolist()[-1] == 2 and ids[0, 0] == 2
    probabilities = bptt.model.predict(ids, verbose=0)[:, -1]  # (prompts, vocabulary): after each prompt's last token
    np.testing.assert_allclose(serving_default["probabilities"], probabilities, atol=1e-5)
    assert next_words["words"][0][0] == "hat" and next_words["words"][2][0] == "sat"
