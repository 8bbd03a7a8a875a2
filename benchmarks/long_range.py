"""A dependency further back than bptt_steps: does attention over a carried memory learn
it where the plain bptt LSTM does not? (issue 28)

The text is episodes: a key word (one of ``--keys``), 60 to 100 filler words (uniform
over ``--fillers``), the word ``recall``, then the key again. Every token but the one
after ``recall`` is as unpredictable as its distribution makes it; that one is fully
determined by a token 62 to 102 positions back, further than the 35 tokens a bptt step
reads, so the gradient never links the two. The task's floor there is 0 nats (accuracy
100%); a model that cannot remember scores log(keys) (accuracy 1 / keys).

Trains the same bptt config twice, for the same minutes (``train.max_minutes``) or, with
``--epochs``, the same epochs, without and with ``model.attention`` (memory 128), then reads the validation episodes in order
(the state and memory carried, as ``evaluate`` reads) and reports, at the recall
positions, the cross-entropy and accuracy; and over all tokens the perplexity.

Usage (from the project root):
    python benchmarks/long_range.py [--minutes 5 | --epochs 10] [--output-dir /tmp/keras_rnnlm_long_range]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETTINGS = [
    "corpus.split=whitespace", "corpus.lowercase=false", "data.mode=bptt", "data.bptt_steps=35", "data.batch_size=32",
    "model.embedding_dim=64", "model.units=128", "model.layers=1", "model.dropout=0.0", "train.learning_rate=0.003",
    "train.epochs=1000", "train.early_stopping_patience=1000", "train.sample_length=0", "train.fit_cache=false",
    "train.tensorboard=false",
]
VARIANTS = {"lstm": [], "attention": ["model.attention=true", "model.attention_memory=128"]}


def write_episodes(path: Path, episodes: int, keys: int, fillers: int, seed: int) -> None:
    """The task's text: one episode a line."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(episodes):
        key = f"key{rng.integers(keys)}"
        filler = " ".join(f"w{word}" for word in rng.integers(fillers, size=rng.integers(60, 101)))
        lines.append(f"{key} {filler} recall {key}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def recall_scores(run: Path, text: Path) -> tuple[float, float, float]:
    """(cross-entropy and accuracy at the recall targets, perplexity over all tokens),
    reading the text in order in one lane, the state and memory carried."""
    import tensorflow as tf

    from keras_rnnlm.data import lanes, lanes_dataset
    from keras_rnnlm.model import carried_state_model
    from keras_rnnlm.runs import RunFolder

    config, vocabulary, tokenizer, model = RunFolder(run).load()
    ids = vocabulary.ids_from_tokens(tokenizer.tokens_from_text(text.read_text(encoding="utf-8")))
    text_lanes = lanes([ids], 1, config.data.bptt_steps)
    reader = carried_state_model(model, 1, config.data.bptt_steps, config.model.memory)
    recall_id = vocabulary.id_from_token("recall")
    recall_losses, recall_right, total, count = [], [], 0.0, 0
    for inputs, targets, weights in lanes_dataset(text_lanes):
        logits = reader(inputs, training=False)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits).numpy()
        at_recall = (inputs.numpy() == recall_id) & (weights.numpy() > 0)
        recall_losses.extend(losses[at_recall])
        recall_right.extend(np.argmax(logits.numpy(), axis=-1)[at_recall] == targets.numpy()[at_recall])
        total += float((losses * weights.numpy()).sum())
        count += int(weights.numpy().sum())
    return float(np.mean(recall_losses)), float(np.mean(recall_right)), math.exp(total / count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="training minutes of each variant (default: 5)")
    parser.add_argument("--epochs", type=int, help="train each variant this many epochs instead (for a machine that is shared)")
    parser.add_argument("--episodes", type=int, default=4000, help="training episodes, about 84 tokens each")
    parser.add_argument("--keys", type=int, default=16)
    parser.add_argument("--fillers", type=int, default=50)
    parser.add_argument("--output-dir", default="/tmp/keras_rnnlm_long_range")
    args = parser.parse_args()
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    train, valid = output / "train.txt", output / "valid.txt"
    write_episodes(train, args.episodes, args.keys, args.fillers, seed=0)
    write_episodes(valid, max(1, args.episodes // 10), args.keys, args.fillers, seed=1)

    print(f"recall floor: 0 nats, accuracy 100%; without memory: {math.log(args.keys):.3f} nats, accuracy {1 / args.keys:.1%}")
    for name, overrides in VARIANTS.items():
        run = output / name
        if not (run / "model.keras").is_file():
            budget = f"train.epochs={args.epochs}" if args.epochs else f"train.max_minutes={args.minutes}"
            settings = [arg for setting in [*SETTINGS, *overrides, budget] for arg in ("--set", setting)]
            subprocess.run([sys.executable, "-m", "keras_rnnlm.train", "--corpus", str(train), "--valid", str(valid),
                            "--output-dir", str(output), "--run-name", name, *settings], check=True)
        cross_entropy, accuracy, perplexity = recall_scores(run, valid)
        print(f"{name:>9}: at the recall targets {cross_entropy:.3f} nats, accuracy {accuracy:.1%}; "
              f"all tokens, perplexity {perplexity:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
