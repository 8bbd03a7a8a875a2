"""What the benchmarks rely on, and a tiny run of each so they keep working (no speed assertions).

The tiny runs each start TensorFlow processes of their own: they are marked slow, and CI
runs them after the README's test command."""

import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_rnnlm.config import ModelConfig
from keras_rnnlm.model import build_model

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import synthetic  # noqa: E402
import train_speed  # noqa: E402

HAS_TORCH = importlib.util.find_spec("torch") is not None


def test_synthetic_corpus_has_the_asked_words_zipf_distributed_and_is_reproducible(tmp_path):
    size = synthetic.write_corpus(tmp_path / "a.txt", 20_000, num_words=500)
    synthetic.write_corpus(tmp_path / "b.txt", 20_000, num_words=500)
    text = (tmp_path / "a.txt").read_text()
    assert size == len(text.encode()) and text == (tmp_path / "b.txt").read_text()
    words = text.split()
    assert len(words) == 20_000 and set(words) <= set(synthetic.word_list(500))
    lines = text.splitlines()
    assert all(5 <= len(line.split()) <= 20 for line in lines[:-1])
    counts = sorted((words.count(word) for word in set(words)), reverse=True)
    assert counts[0] > 5 * counts[9]  # the most frequent word is far ahead of the tenth (1/r)


def test_training_flops_count_every_weight_multiply_add_three_times():
    config = ModelConfig(embedding_dim=8, units=16, layers=2)
    model = build_model(config, window_size=5, vocabulary_size=100)
    recurrent = [layer for layer in model.layers if "lstm" in layer.name]
    # Forward multiply-adds: each recurrent kernel once per window position, the output kernel once.
    forward = sum(5 * (layer.cell.kernel.shape.num_elements() + layer.cell.recurrent_kernel.shape.num_elements())
                  for layer in recurrent) + model.get_layer("next_token").kernel.shape.num_elements()
    assert train_speed.training_flops_per_window(config, 5, 100) == 2 * 3 * forward
    default = train_speed.training_flops_per_window(ModelConfig(), 5, 10_000)
    assert default == 6 * (5 * 4 * 256 * (128 + 256) + 256 * 10_000)  # 27.2 MFLOP


def test_reference_windows_and_models_have_the_same_shapes():
    ids = train_speed.token_stream(50, vocabulary_size=20)
    assert ids.dtype == np.int32 and ids.min() >= 3 and ids.max() < 20
    windows, targets = train_speed.sliding_windows(ids, 5)
    assert windows.shape == (45, 5) and np.array_equal(windows[3], ids[3:8]) and targets[3] == ids[8]
    if HAS_TORCH:
        import torch

        model = train_speed.torch_model(ModelConfig(embedding_dim=8, units=16), vocabulary_size=20)
        assert model(torch.from_numpy(windows).long()).shape == (45, 20)


def run_benchmark(script, *arguments):
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), *arguments],
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_train_speed_runs_at_a_tiny_size():
    paths = ["keras_rnnlm", "naive"] + (["torch"] if HAS_TORCH else [])  # torch comes with the bench extra
    result = run_benchmark("train_speed.py", "--repeats", "1", "--windows", "512", "--naive-windows", "256",
                           "--vocabulary", "50", "--units", "8", "--embedding", "8", "--batch-size", "64",
                           "--matmul-size", "128", "--paths", *paths)
    assert set(result["windows_per_second"]) == set(paths)
    assert all(result["windows_per_second"][path] == statistics.median(runs) and len(runs) == 1 for path, runs in result["runs"].items())
    assert result["flops_per_window"] == train_speed.training_flops_per_window(ModelConfig(embedding_dim=8, units=8), 5, 50)


@pytest.mark.slow
def test_bptt_speed_runs_at_a_tiny_size():
    paths = ["keras_rnnlm_mixed", "keras_rnnlm_attention_layer_norm"] + (["torch_bfloat16"] if HAS_TORCH else [])
    result = run_benchmark("bptt_speed.py", "--repeats", "1", "--steps", "2", "--vocabulary", "50", "--units", "8",
                           "--lanes", "2", "--bptt", "3", "--matmul-size", "128", "--paths", *paths)
    assert set(result["tokens_per_second"]) == set(paths)
    assert all(result["tokens_per_second"][path] == statistics.median(runs) and len(runs) == 1 for path, runs in result["runs"].items())
    assert result["flops_per_token"] == 6 * (2 * 4 * 8 * 16 + 8 * 50)  # two LSTM layers of 8 and the output layer, per token


@pytest.mark.slow
def test_train_breakdown_times_every_piece():
    result = run_benchmark("train_breakdown.py", "--calls", "1", "--repeats", "1")
    names = list(result["milliseconds"])
    assert len(names) == 15 and all(value > 0 for value in result["milliseconds"].values())
    assert sum("train step" in name for name in names) == 3
    assert {"WindowLSTM, unrolled (mixed_bfloat16)", "Keras LSTM, unrolled (mixed_bfloat16)"} <= set(names)


@pytest.mark.slow
def test_memory_benchmark_runs_at_a_tiny_size(tmp_path):
    result = run_benchmark("memory.py", "--tokens", "2000", "4000", "--workdir", str(tmp_path))
    small, large = result["runs"]
    assert (small["tokens"], large["tokens"]) == (2000, 4000) and large["bytes"] > small["bytes"]
    assert all(run["peak_rss"] > 50 * 2**20 for run in result["runs"])  # a real process was measured
    assert result["bytes_per_token"] == round((large["peak_rss"] - small["peak_rss"]) / 2000, 2)


@pytest.mark.slow
def test_encode_speed_runs_at_a_tiny_size(tmp_path):
    result = run_benchmark("encode_speed.py", "--tokens", "20000", "--workdir", str(tmp_path))
    assert result["tokens"] > 20_000  # words and line breaks
    assert set(result["megabytes_per_second"]) == {"one process", "worker processes"}
    assert all(speed > 0 for speed in result["megabytes_per_second"].values())


@pytest.mark.slow
@pytest.mark.parametrize("mode, parts", [("windows", ["1", "2"]), ("bptt", ["1"])])
def test_generate_speed_runs_at_a_tiny_size(mode, parts):
    result = run_benchmark("generate_speed.py", "--repeats", "2", "--tokens", "8", "--naive-tokens", "2",
                           "--mode", mode, "--parts", *parts)
    names = {"naive"} | {f"batch {batch}, {count} parts" for batch in (1, 64) for count in parts}
    assert set(result["tokens_per_second"]) == set(result["runs"]) == names
    assert all(len(runs) == 2 and result["tokens_per_second"][name] == statistics.median(runs) for name, runs in result["runs"].items())


@pytest.mark.slow
def test_quality_benchmark_runs_at_a_tiny_size(tmp_path):
    corpus = tmp_path / "lyrics.txt"
    corpus.write_text("cause baby now we got bad blood\nyou know it used to be mad love\n" * 40, encoding="utf-8")
    result = run_benchmark("quality.py", "--seeds", "1", "--epochs", "1", "--corpus", str(corpus),
                           "--set", "model.embedding_dim=8", "--set", "model.units=8", "--set", "train.tensorboard=false")
    assert set(result["val_perplexity"]) == {"float32", "mixed"}
    # A trained word model of the song: far better than guessing among its 18 tokens (and 3 reserved ones).
    assert all(len(values) == 1 and 1 < values[0] < 21 for values in result["val_perplexity"].values())


@pytest.mark.slow
def test_long_context_benchmark_scores_both_modes_on_the_same_held_out_text(tmp_path):
    corpus = tmp_path / "song.txt"
    corpus.write_text("cause baby now we got bad blood\nyou know it used to be mad love\n" * 60, encoding="utf-8")
    result = run_benchmark("long_context.py", "--output-dir", str(tmp_path / "runs"), "--corpus", str(corpus),
                           "--set", "train.epochs=1", "--set", "model.units=16", "--set", "model.embedding_dim=16",
                           "--set", "data.batch_size=4", "--set", "data.bptt_steps=5", "--set", "train.tensorboard=false")
    assert set(result["results"]) == {"windows", "bptt"}
    assert result["results"]["windows"]["tokens"] == result["results"]["bptt"]["tokens"] == 102  # the same held-out text
    assert "lanes" in result["results"]["bptt"]["scoring"] and "5 before it" in result["results"]["windows"]["scoring"]
    assert result["bptt_over_windows"] == pytest.approx(
        result["results"]["bptt"]["perplexity"] / result["results"]["windows"]["perplexity"])


@pytest.mark.slow
def test_first_contact_benchmark_times_the_error_and_the_import():
    result = run_benchmark("first_contact.py", "--repeats", "1")
    assert set(result["medians"]) == {"train --corpus missing.txt", "import tensorflow"}
    assert all(result["medians"][name] == statistics.median(values) and len(values) == 1 for name, values in result["seconds"].items())


@pytest.mark.slow
def test_epoch_cost_times_train_and_the_bare_fit_and_names_where_the_time_goes():
    result = run_benchmark("epoch_cost.py", "--lines", "60", "--epochs", "2", "--repeats", "1")
    assert result["overhead"] == pytest.approx(result["train_seconds"] / result["bare_seconds"] - 1)
    assert result["windows"] > 0 and result["policy"] in ("float32", "mixed_bfloat16")


@pytest.mark.slow
def test_exit_soak_times_each_runs_exit_after_its_last_line():
    result = run_benchmark("exit_soak.py", "--runs", "2", "--words", "20000")
    assert {mode: len(seconds) for mode, seconds in result["seconds"].items()} == {"windows": 1, "bptt": 1}
    assert result["max"] == max(seconds for values in result["seconds"].values() for seconds in values)


@pytest.mark.slow
def test_hostile_inputs_of_launch_are_each_one_line(tmp_path):
    result = run_benchmark("hostile_inputs.py", "--only", "launch")
    assert result["commands"]["launch"]["tried"] == 16 and result["anything_else"] == 0


@pytest.mark.slow
def test_iterator_teardown_times_each_deletion_with_autotune_on_and_off():
    result = run_benchmark("iterator_teardown.py", "--times", "2", "--idle", "0", "--busy", "0")
    assert {name: len(values) for name, values in result["seconds"].items()} == {"autotune on": 2, "autotune off": 2}
    assert result["summary"]["autotune off"]["max"] == max(result["seconds"]["autotune off"])


@pytest.mark.slow
def test_fit_stall_times_one_epoch_fits_with_autotune_on_and_off():
    result = run_benchmark("fit_stall.py", "--fits", "1", "--steps", "2")
    assert {name: len(values) for name, values in result["seconds"].items()} == {"autotune on": 1, "autotune off": 1}
    assert result["summary"]["autotune on"]["median"] == result["seconds"]["autotune on"][0]
