"""Dynamic evaluation: each token is scored before the model learns from it, the run's
weights come back unchanged, it helps where the text repeats, it mixes in the cache in
the same pass, and evaluate fits, keeps and uses its settings."""

import json
import math
import re
import shutil

import keras
import numpy as np
import pytest
from conftest import ALTERNATING

from keras_rnnlm import cli
from keras_rnnlm.config import ModelConfig
from keras_rnnlm.cache import cache_scores
from keras_rnnlm.data import lanes
from keras_rnnlm.dynamic import dynamic_scores, fit_dynamic
from keras_rnnlm.evaluate import score_lanes
from keras_rnnlm.model import build_model
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.runs import CacheSettings, DynamicSettings


@pytest.fixture()
def untrained():
    keras.utils.set_random_seed(5)
    return build_model(ModelConfig(embedding_dim=16, units=16, dropout=0.0, tie_embeddings=True), None, vocabulary_size=12)


SONG = np.tile(np.arange(3, 12, dtype=np.int32), 30)  # a text that repeats every 9 tokens


def test_without_a_step_it_is_the_in_order_score_and_the_weights_come_back(untrained):
    text = lanes([SONG], 2, 10)
    before = [weight.copy() for weight in untrained.get_weights()]
    _, without, accuracy = score_lanes(untrained, text)
    assert dynamic_scores(untrained, text, DynamicSettings(0.0, 0.0))[:2] == pytest.approx((without, accuracy), rel=1e-6)
    learned, _, no_cache = dynamic_scores(untrained, text, DynamicSettings(1.0, 0.0))
    assert no_cache is None
    assert learned != pytest.approx(without, rel=1e-3)
    for old, new in zip(before, untrained.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert score_lanes(untrained, text)[1] == pytest.approx(without, rel=1e-7)


def test_a_model_with_attention_carries_its_memory_and_learns_the_same_way():
    keras.utils.set_random_seed(6)
    config = ModelConfig(embedding_dim=8, units=8, dropout=0.0, attention=True, attention_memory=6)
    model = build_model(config, None, vocabulary_size=12)
    text = lanes([SONG[:120]], 2, 5)
    _, without, accuracy = score_lanes(model, text, config.memory)
    assert dynamic_scores(model, text, DynamicSettings(0.0, 0.0), config.memory)[:2] == pytest.approx((without, accuracy), rel=1e-6)
    assert dynamic_scores(model, text, DynamicSettings(0.3, 0.0), config.memory)[0] < without


def test_with_the_cache_the_same_pass_scores_the_mixture_of_the_learning_model(untrained):
    text = lanes([SONG], 2, 9)
    cache = CacheSettings(size=20, theta=0.5, lam=0.3)
    _, static_cache, _ = cache_scores(untrained, text, cache)
    alone, accuracy, _ = dynamic_scores(untrained, text, DynamicSettings(0.3, 0.0))
    # Without a step, the static cache's figure; with steps, the dynamic figure is the same with or without the cache.
    assert dynamic_scores(untrained, text, DynamicSettings(0.0, 0.0), cache=cache)[2] == pytest.approx(static_cache, rel=1e-5)
    learned, learned_accuracy, both = dynamic_scores(untrained, text, DynamicSettings(0.3, 0.0), cache=cache)
    assert (learned, learned_accuracy) == pytest.approx((alone, accuracy), rel=1e-5)
    assert both < static_cache and both != pytest.approx(learned, rel=1e-3)  # the song repeats: both gains count


def test_each_step_is_scored_before_the_model_learns_from_it(untrained):
    one_step = lanes([SONG[:20]], 2, 10)  # a single step per lane: nothing learned before it is scored
    assert dynamic_scores(untrained, one_step, DynamicSettings(3.0, 0.0))[0] == pytest.approx(score_lanes(untrained, one_step)[1],
                                                                                              rel=1e-6)
    # Two steps: the second's score moves with the step size (the first step's update reached it).
    two_steps = lanes([SONG[:40]], 2, 10)
    slow, fast = (dynamic_scores(untrained, two_steps, DynamicSettings(rate, 0.0))[0] for rate in (0.1, 1.0))
    assert slow != pytest.approx(fast, rel=1e-4)


def test_where_the_text_repeats_learning_from_it_scores_better_and_fitting_picks_the_best(untrained):
    text = lanes([SONG], 2, 9)
    _, without, _ = score_lanes(untrained, text)
    settings = fit_dynamic(untrained, text, without, learning_rates=(0.3, 3.0), decays=(0.0, 0.5), cache_grid=None)
    assert math.exp(settings.valid_cross_entropy) < 0.7 * math.exp(without)  # an untrained model learns the song
    assert settings.valid_cross_entropy_without == without
    tried = {(rate, decay): dynamic_scores(untrained, text, DynamicSettings(rate, decay))[0]
             for rate, decay in ((0.3, 0.0), (3.0, 0.0), (settings.learning_rate, 0.5))}
    assert settings.valid_cross_entropy == pytest.approx(min(tried.values()), rel=1e-6)
    assert tried[(settings.learning_rate, 0.5)] > tried[(settings.learning_rate, 0.0)]  # pulled back, it forgets the song


def test_fitting_also_fits_the_cache_on_the_dynamic_pass(untrained):
    text = lanes([SONG], 2, 9)
    _, without, _ = score_lanes(untrained, text)
    grid = (20, 40), (0.2, 1.0), (0.05, 0.3)
    settings = fit_dynamic(untrained, text, without, learning_rates=(0.3,), decays=(0.0,), cache_grid=grid)
    cache = settings.cache()
    assert cache is not None and cache.valid_cross_entropy < settings.valid_cross_entropy
    scored = {(size, theta, lam): dynamic_scores(untrained, text, settings, cache=CacheSettings(size, theta, lam))[2]
              for size, theta, lam in ((20, 0.2, 0.05), (cache.size, cache.theta, cache.lam))}
    assert cache.valid_cross_entropy == pytest.approx(min(scored.values()), rel=1e-5)


def test_fitting_turns_it_off_where_no_step_helps(untrained):
    text = lanes([SONG[:40]], 2, 10)
    settings = fit_dynamic(untrained, text, without=-1.0, learning_rates=(0.1,), decays=(0.0,))  # nothing beats -1 nats
    assert settings.learning_rate == 0 and settings.valid_cross_entropy == -1.0


def test_evaluate_fits_keeps_and_scores_with_dynamic_evaluation(bptt_run, tmp_path, capfd):
    run = shutil.copytree(bptt_run, tmp_path / "run")
    held_out = tmp_path / "held_out.txt"
    held_out.write_text(ALTERNATING * 5)
    assert cli.main("evaluate", ["--model", str(run), "--text", str(held_out), "--dynamic"]) == 2
    assert "has no fitted dynamic evaluation (dynamic.json); fit one on validation text first" in capfd.readouterr().err
    assert cli.main("evaluate", ["--model", str(run), "--text", str(held_out), "--fit-dynamic"]) == 0
    out = capfd.readouterr().out
    settings = DynamicSettings.load(run)
    assert "dynamic evaluation fitted:" in out and settings.describe() in out
    assert settings.cache() is None or f"{settings.cache().describe()}, fitted on the dynamic pass" in out
    assert cli.main("evaluate", ["--model", str(run), "--text", str(held_out), "--dynamic", "--cache"]) == 0
    out = capfd.readouterr().out
    dynamic_line = next(line for line in out.splitlines() if line.startswith("dynamic:"))
    assert f"perplexity {math.exp(settings.valid_cross_entropy):.2f}" in dynamic_line and "with the cache:" in out
    mixed = (settings.cache() or CacheSettings.load(run)).describe()
    assert re.search(rf"^dynamic \+ cache:\s+[\d.]+ nats/token, perplexity [\d.]+ \({mixed}\)$", out, re.M)
    # A dynamic.json from before the cache was fitted with it: the run's own cache is mixed in.
    (run / "dynamic.json").write_text(json.dumps({"learning_rate": settings.learning_rate, "decay": 0.0}))
    assert cli.main("evaluate", ["--model", str(run), "--text", str(held_out), "--dynamic", "--cache"]) == 0
    assert f"({CacheSettings.load(run).describe()})" in capfd.readouterr().out
    (run / "dynamic.json").write_text("{not json")
    assert cli.main("evaluate", ["--model", str(run), "--text", str(held_out), "--dynamic"]) == 2
    assert "dynamic.json is damaged; fit the dynamic evaluation again with evaluate --fit-dynamic" in capfd.readouterr().err


def test_dynamic_evaluation_of_a_windows_run_or_with_a_fit_flag_is_refused_in_one_line(song_run, bptt_run, tmp_path, capfd):
    text = tmp_path / "text.txt"
    text.write_text(ALTERNATING)
    for flag in ("--dynamic", "--fit-dynamic"):
        assert cli.main("evaluate", ["--model", str(song_run), "--text", str(text), flag]) == 2
        assert f"{flag} needs a bptt-mode run" in capfd.readouterr().err
    assert cli.main("evaluate", ["--model", str(bptt_run), "--text", str(text), "--dynamic", "--fit-cache"]) == 2
    assert "give one of them at a time" in capfd.readouterr().err


def test_fitting_never_replaces_a_file_of_the_users_of_the_same_name(bptt_run, tmp_path, capfd):
    run = shutil.copytree(bptt_run, tmp_path / "run")
    held_out = tmp_path / "held_out.txt"
    held_out.write_text(ALTERNATING)
    (run / "dynamic.json").write_text("my notes\n")
    assert cli.main("evaluate", ["--model", str(run), "--text", str(held_out), "--fit-dynamic"]) == 2
    err = capfd.readouterr().err
    assert "dynamic.json is a file keras_rnnlm did not write, and this would replace it; move it out of the folder first" in err
    assert len(err.strip().splitlines()) == 1 and (run / "dynamic.json").read_text() == "my notes\n"
    with pytest.raises(RnnlmError, match="did not write"):
        DynamicSettings(1.0, 0.0).save(run)  # the settings' own write checks too
    assert (run / "dynamic.json").read_text() == "my notes\n"
