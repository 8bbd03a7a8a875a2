import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import SONG, small_config
from keras_rnnlm import cli
from keras_rnnlm.export import SIGNATURES, export_run, main
from keras_rnnlm.generate import Generator
from keras_rnnlm.train import train

NAMES = ["anna", "bob", "emma", "otto", "hannah", "ava", "elle", "ada"]

# Runs in a fresh process that cannot import keras or keras_rnnlm: it reads requests
# (signature name, inputs) as JSON on stdin and prints each result, or the error's message.
SERVER = textwrap.dedent("""
    import json, sys
    sys.modules["keras"] = None        # importing them now fails
    sys.modules["keras_rnnlm"] = None
    import tensorflow as tf

    exported = tf.saved_model.load(sys.argv[1])
    results = []
    for name, inputs in json.load(sys.stdin):
        signature = exported.signatures[name]
        specs = signature.structured_input_signature[1]
        try:
            outputs = signature(**{key: tf.constant(value, specs[key].dtype) for key, value in inputs.items()})
        except tf.errors.InvalidArgumentError as error:
            results.append({"error": error.message})
            continue
        results.append({key: value.numpy().tolist() for key, value in outputs.items()})
    print(json.dumps(results, default=lambda value: value.decode()))
""")


def serve(export_dir, requests):
    """Calls the exported signatures in a process that has only TensorFlow."""
    result = subprocess.run(
        [sys.executable, "-c", SERVER, str(export_dir)],
        input=json.dumps(requests), capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def generate_request(prompts, num_words, temperature=1.0, top_k=0, top_p=1.0, seed=0, max_lines=0):
    return ["generate", {"prompts": prompts, "num_words": num_words, "temperature": temperature, "top_k": top_k,
                         "top_p": top_p, "seed": seed, "max_lines": max_lines}]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A word model that has memorized a song and a line-mode character model of names,
    each trained and exported."""
    folder = tmp_path_factory.mktemp("export")
    (folder / "song.txt").write_text(SONG * 40)
    (folder / "names.txt").write_text("\n".join(NAMES * 30) + "\n")
    # float32: a bfloat16 model served from the SavedModel differs from the Keras call by up to 5e-3.
    train(small_config([folder / "song.txt"], train={"epochs": 12, "precision": "float32"}), folder / "song", verbose=0)
    names = small_config([folder / "names.txt"], corpus={"level": "char", "sequences": "lines"},
                         data={"char_window_size": 8}, train={"epochs": 10})
    train(names, folder / "names", verbose=0)
    for run in ("song", "names"):
        export_run(folder / run, folder / run / "saved_model")
    return folder


PROMPTS = ["cause baby now we got", "", "You KNOW, it used", "zebra quokka", "cause baby now we got bad blood you know it"]
SETTINGS = [
    dict(temperature=0.0),
    dict(temperature=1.5, seed=3),
    dict(temperature=0.8, top_k=3, seed=4),
    dict(temperature=2.0, top_p=0.8, seed=5, max_lines=1),
]


def test_exported_generate_writes_exactly_what_the_generator_writes(runs):
    generator = Generator.from_run(runs / "song")
    requests = [generate_request(PROMPTS, 15, **settings) for settings in SETTINGS]
    served = serve(runs / "song" / "saved_model", requests)
    for settings, result in zip(SETTINGS, served):
        expected = generator.generate(
            PROMPTS, 15, strategy="greedy" if settings["temperature"] == 0 else "temperature",
            temperature=settings["temperature"] or 1.0, top_k=settings.get("top_k") or None,
            top_p=settings.get("top_p"), seed=settings.get("seed", 0), max_lines=settings.get("max_lines", 0),
        )
        assert result["texts"] == expected
    assert served[0]["texts"][0] == "cause baby now we got bad blood\nyou know it used to be mad love\ncause baby now"


def test_exported_line_mode_names_stop_at_the_line_end(runs):
    generator = Generator.from_run(runs / "names")
    (result,) = serve(runs / "names" / "saved_model", [generate_request(["", "hann", "Em"] * 4, 30, 0.9, seed=2, max_lines=1)])
    assert result["texts"] == generator.generate(["", "hann", "Em"] * 4, 30, temperature=0.9, seed=2)
    assert all(text.endswith("\n") and "\n" not in text[:-1] for text in result["texts"])


def test_next_words_and_serving_default_agree_with_the_keras_model(runs):
    generator = Generator.from_run(runs / "song")
    texts = ["cause baby now we", "", "zebra"]
    windows = generator.windows_from_prompts(texts)
    served = serve(runs / "song" / "saved_model", [
        ["next_words", {"texts": texts, "k": 4}],
        ["serving_default", {"windows": windows.tolist()}],
    ])
    probabilities = generator.model(windows, training=False).numpy()  # (3, vocabulary)
    np.testing.assert_allclose(served[1]["probabilities"], probabilities, atol=1e-5)

    choosable = probabilities.copy()
    choosable[:, :2] = -1  # <pad> and <unk> are left out
    best = np.argsort(-choosable, axis=1, kind="stable")[:, :4]
    np.testing.assert_allclose(served[0]["probabilities"], np.take_along_axis(probabilities, best, axis=1), atol=1e-5)
    assert [words[0] for words in served[0]["words"]] == [generator.vocabulary.tokens[i] for i in best[:, 0]]
    assert served[0]["words"][0][0] == "got"


def test_bad_inputs_get_a_defined_result_or_a_clear_error(runs):
    requests = [
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
    results = serve(runs / "song" / "saved_model", requests)
    assert results[0] == {"texts": ["cause baby", "", "zebra zebra zebra"]}
    assert results[1] == {"texts": []}
    messages = [result.get("error", "") for result in results[2:12]]
    for expected, message in zip(
        ["num_words must be at most 100000", "num_words must be 0 or more", "temperature must be 0 (greedy) or more",
         "top_k must be 0 (keep all) or more", "top_k must be at most 18", "top_p must be in (0, 1]",
         "top_p must be in (0, 1]", "max_lines must be 0 (no limit) or more", "k must be at least 1",
         "k must be at most 16"],
        messages,
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
    assert "window_size 5; vocabulary_size 18" in readme
    assert all(name in readme for name in SIGNATURES)


def test_cli_replaces_an_earlier_export_and_refuses_other_folders(runs, tmp_path, capsys):
    out = tmp_path / "exported"
    assert cli.run(main, ["--model", str(runs / "song"), "--out", str(out)]) == 0
    (out / "stale").write_text("from the first export")
    assert cli.run(main, ["--model", str(runs / "song"), "--out", str(out)]) == 0
    assert (out / "saved_model.pb").is_file() and not (out / "stale").exists()
    assert [path.name for path in tmp_path.iterdir()] == ["exported"]  # no temporary folders left

    (tmp_path / "notes").mkdir()
    capsys.readouterr()
    assert cli.run(main, ["--model", str(runs / "song"), "--out", str(tmp_path / "notes")]) == 2
    assert "is not a SavedModel; choose another --out" in capsys.readouterr().err
    assert cli.run(main, ["--model", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "is not a keras_rnnlm run" in capsys.readouterr().err and not (tmp_path / "x").exists()
