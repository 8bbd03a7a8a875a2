"""The continuous cache: its scores equal the paper's formula computed naively, it helps
where words repeat, and a bptt run fits it, keeps it and evaluate uses it."""

import json
import math
import shutil

import keras
import numpy as np
import pytest
from conftest import ALTERNATING

from keras_rnnlm import cli
from keras_rnnlm.cache import cache_cross_entropies, cache_scores, fit_cache
from keras_rnnlm.config import ModelConfig
from keras_rnnlm.data import lanes
from keras_rnnlm.model import build_model, carried_state_features
from keras_rnnlm.runs import CacheSettings


def naive_cross_entropy(model, text, size, theta, lam):
    """Grave et al.'s mixture, token by token in NumPy, from each lane's states read in one call."""
    steps = [text.step(number) for number in range(text.num_steps)]
    inputs, targets, weights = (np.concatenate([step[part] for step in steps], axis=1) for part in range(3))
    features, logits = (output.numpy() for output in carried_state_features(model, text.num_lanes, inputs.shape[1])(inputs))
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    total = 0.0
    for lane in range(text.num_lanes):
        for t in range(inputs.shape[1]):
            if not weights[lane, t]:
                continue
            p_model = probabilities[lane, t, targets[lane, t]]
            remembered = [i for i in range(max(0, t - size), t) if weights[lane, i]]
            if remembered:
                votes = np.exp(theta * features[lane, remembered] @ features[lane, t])
                p_cache = votes[targets[lane, remembered] == targets[lane, t]].sum() / votes.sum()
                p_model = (1 - lam) * p_model + lam * p_cache
            total -= math.log(p_model)
    return total / text.num_targets


@pytest.fixture(scope="module")
def untrained():
    keras.utils.set_random_seed(3)
    return build_model(ModelConfig(embedding_dim=8, units=8, dropout=0.0), None, vocabulary_size=12)


def test_the_cache_is_the_papers_mixture_over_each_lanes_last_states(untrained):
    tokens = np.random.default_rng(0).integers(3, 12, 83).astype(np.int32)
    text = lanes([tokens], 3, 5)  # steps of 5: the memory must carry across them
    without, grid = cache_cross_entropies(untrained, text, sizes=(3, 40), thetas=(0.5, 2.0), lambdas=(0.1, 0.6))
    assert without == pytest.approx(naive_cross_entropy(untrained, text, 1, 1.0, 0.0), rel=1e-5)
    for i, size in enumerate((3, 40)):
        for j, theta in enumerate((0.5, 2.0)):
            for k, lam in enumerate((0.1, 0.6)):
                assert grid[i, j, k] == pytest.approx(naive_cross_entropy(untrained, text, size, theta, lam), rel=1e-5)


def test_where_words_repeat_the_cache_scores_better_and_fitting_picks_the_best_of_the_grid():
    keras.utils.set_random_seed(4)
    untrained = build_model(ModelConfig(embedding_dim=16, units=16, dropout=0.0), None, vocabulary_size=12)
    embeddings = untrained.get_layer("embedding").embeddings
    embeddings.assign(embeddings * 100)  # saturated states: each token's state its own, as a trained model's
    song = np.tile(np.arange(3, 12, dtype=np.int32), 20)  # a text that repeats every 9 tokens
    text = lanes([song], 2, 10)
    settings = fit_cache(untrained, text)
    without, with_cache, _ = cache_scores(untrained, text, settings)
    assert with_cache == pytest.approx(settings.valid_cross_entropy, rel=1e-5)
    assert without == pytest.approx(settings.valid_cross_entropy_without, rel=1e-5)
    assert math.exp(with_cache) < 0.6 * math.exp(without)  # an untrained model, but the cache remembers
    _, grid = cache_cross_entropies(untrained, text)
    assert settings.valid_cross_entropy == pytest.approx(grid.min(), rel=1e-6)


def test_a_bptt_run_fits_its_cache_and_evaluate_scores_with_it(bptt_run, corpora, tmp_path, capfd):
    settings = CacheSettings.load(bptt_run)
    summary = json.loads((bptt_run / "summary.json").read_text())
    assert summary["cache"]["size"] == settings.size and summary["cache_val_perplexity"] == pytest.approx(
        math.exp(settings.valid_cross_entropy))
    assert settings.valid_cross_entropy <= settings.valid_cross_entropy_without  # else lambda 0: the cache off
    held_out = tmp_path / "held_out.txt"
    held_out.write_text(ALTERNATING * 5)
    assert cli.main("evaluate", ["--model", str(bptt_run), "--text", str(held_out), "--cache"]) == 0
    out = capfd.readouterr().out
    assert "perplexity:" in out and "with the cache:" in out and settings.describe() in out
    copy = shutil.copytree(bptt_run, tmp_path / "copy")
    (copy / "cache.json").unlink()
    assert cli.main("evaluate", ["--model", str(copy), "--text", str(held_out), "--cache"]) == 2
    assert "has no fitted cache (cache.json); fit one" in capfd.readouterr().err
    assert cli.main("generate", ["--model", str(copy), "--cache"]) == 2
    assert "has no fitted cache (cache.json); fit one" in capfd.readouterr().err
    assert cli.main("evaluate", ["--model", str(copy), "--text", str(held_out), "--fit-cache"]) == 0
    assert "cache fitted:" in capfd.readouterr().out and CacheSettings.load(copy).size in (100, 500, 2000)


def test_the_cache_of_a_run_without_one_or_of_a_windows_run_is_refused_in_one_line(song_run, tmp_path, capfd):
    text = tmp_path / "text.txt"
    text.write_text(ALTERNATING)
    for flag in ("--cache", "--fit-cache"):
        assert cli.main("evaluate", ["--model", str(song_run), "--text", str(text), flag]) == 2
        assert "needs a bptt-mode run" in capfd.readouterr().err
    assert cli.main("generate", ["--model", str(song_run), "--cache"]) == 2
    assert "needs a bptt-mode run" in capfd.readouterr().err


def test_generate_with_the_cache_writes_from_the_mixture(bptt_run, tmp_path, capfd):
    from keras_rnnlm.generate import Generator

    run = shutil.copytree(bptt_run, tmp_path / "run")
    CacheSettings(size=100, theta=1.0, lam=0.5).save(run)  # its own fit turned the cache off (lambda 0) on so easy a text
    prompt = ["the cat sat on the mat and the cat sat"]
    assert cli.main("generate", ["--model", str(run), "--prompt", prompt[0], "--cache", "--seed", "3"]) == 0
    written = capfd.readouterr().out.strip()
    assert written == Generator.from_run(run, cache=True).generate(prompt, 50, seed=3)[0]
    assert written != Generator.from_run(run).generate(prompt, 50, seed=3)[0]  # the same seed, other draws
