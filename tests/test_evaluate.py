import math

import numpy as np

from keras_rnnlm import cli
from keras_rnnlm.config import ModelConfig, TrainConfig
from keras_rnnlm.data import lanes
from keras_rnnlm.evaluate import evaluate, score_lanes
from keras_rnnlm.model import build_model, compile_model


def test_bptt_scoring_equals_reading_each_lane_whole_from_zero_state():
    """score_lanes reads steps of 3 with the state carried; the reference reads each lane
    in one call of the saved (stock) model and sums the cross-entropy of real targets."""
    model = build_model(ModelConfig(embedding_dim=8, units=8, layers=2), window_size=None, vocabulary_size=20)
    compile_model(model, TrainConfig())
    text = lanes([np.random.default_rng(0).integers(3, 20, 40).astype(np.int32)], num_lanes=3, bptt_steps=3)
    tokens, cross_entropy, accuracy = score_lanes(model, text)

    inputs, targets = (np.concatenate([text.step(n)[part] for n in range(text.num_steps)], axis=1) for part in (0, 1))  # (lanes, length)
    probabilities = model.predict(inputs, verbose=0)  # (lanes, length, vocabulary)
    target_probabilities = np.take_along_axis(probabilities, targets[..., np.newaxis], axis=2)[..., 0]
    real = (np.arange(3)[:, np.newaxis] * inputs.shape[1] + np.arange(inputs.shape[1])) < 40
    assert tokens == real.sum() == 40
    assert math.isclose(cross_entropy, -np.log(target_probabilities[real]).mean(), rel_tol=1e-5)
    assert math.isclose(accuracy, (probabilities.argmax(axis=2) == targets)[real].mean(), rel_tol=1e-6)


def test_evaluate_says_how_a_bptt_run_scored_its_text(bptt_run, corpora, capsys):
    scores = evaluate(bptt_run, [corpora / "alternating.txt"])
    assert scores["tokens"] == 14 * 60 and "10 lanes side by side, the state carried" in scores["scoring"]
    assert scores["perplexity"] < 1.5  # it has learned the text
    assert cli.main("evaluate", ["--model", str(bptt_run), "--text", str(corpora / "alternating.txt")]) == 0
    out = capsys.readouterr().out
    assert "tokens evaluated: 840 (in order, 10 lanes side by side" in out
    assert f"perplexity:       {scores['perplexity']:.2f}" in out
