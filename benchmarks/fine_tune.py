"""Fine-tuning a trained model on a small text against training on that text alone (issue 29).

Four pairs from ``../shared/data``:

- word level: a WikiText-2 bptt run (``--base word=RUN``, for example the run
  ``python benchmarks/wikitext2.py --config configs/wikitext2_awd.toml`` leaves) fine-tuned
  on Shakespeare's sonnets. The sonnets are first cut as WikiText-2 is (punctuation
  apart from words, case kept) so the base reads them as it read its own text.
- word level (``word_kjv``): a model of the King James text (``--base word_kjv=RUN``, for
  example ``python -m keras_rnnlm.train --config configs/kjv.toml --set train.max_minutes=30``'s,
  or the built-in corpus' ``python -m keras_rnnlm.train``), whose English is the sonnets' age,
  fine-tuned on the sonnets as they are (the base's own tokenizer cuts them);
- character level: a baby-name model (``--base char=RUN``; without it, ``configs/names.toml``
  is trained here for ``--base-minutes``) fine-tuned on the dinosaur names;
- character level (``sonnets_char``): a tiny Shakespeare model (``--base sonnets_char=RUN``,
  else ``configs/tinyshakespeare_char.toml`` trained here) fine-tuned on the sonnets.

The small text is split in order: its first 90% lines train, its last 10% are the
held-out text every run is judged on. Each variant trains in its own process for the same
``--minutes`` (``train.max_minutes``: it stops after the first epoch that ends past the
budget; early stopping may end it sooner), from the base run's own config with the corpus
swapped, so from-scratch and fine-tuned runs share every setting but the start and the
learning rate:

- ``scratch``: random weights, the base's learning rate;
- ``lr0.1`` / ``lr0.3`` / ``lr1``: from the base, at that share of the base's learning
  rate (a fine-tune given none takes the base's own, as ``lr1``; it took a tenth before
  these measurements);
- ``frozen``: as ``lr0.1``, the embedding matrix (and the output layer tied
  to it) held at its starting values through the first epoch;
- ``keep``: as ``lr0.1``, with ``--keep-vocabulary``;
- ``scratch_vocabulary``: random weights, at the base's learning rate, with the
  fine-tune's vocabulary (the base's and the small text's words): a from-scratch model
  that reads the held-out text with the same tokens, and the same ``<unk>``, as a
  fine-tune. (A from-scratch model whose vocabulary is the small text's alone reads more
  of the held-out text as ``<unk>``, which is easier to predict: its perplexity is not
  comparable with the fine-tune's.)

Reported per variant: the best held-out perplexity (nats/char at character level), the
epoch it came at, the held-out text's share of ``<unk>`` under the run's vocabulary (a
run with more ``<unk>`` has an easier text to predict: from scratch a word seen only in
the base's text is ``<unk>``), the first epoch a fine-tune beat the from-scratch best,
and samples.

Usage (from the project root):
    python benchmarks/fine_tune.py --base word=RUN [--base char=RUN] [--pairs word,char,sonnets_char]
        [--variants scratch,lr0.1,lr0.3,lr1,frozen,keep,scratch_vocabulary] [--minutes 4] [--output-dir /tmp/keras_rnnlm_fine_tune]
        [--set key=value ...]

Rerunning the same command skips the runs already finished (their folders are kept).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"

PAIRS = {
    "word": {"level": "word", "text": "sonnets/sonnets.txt",
             "generate": ["--prompt", "Shall I compare thee", "--words", "60", "--num-samples", "2", "--temperature", "0.8"]},
    "char": {"level": "char", "text": "dinos/dinos.txt", "generate": ["--num-samples", "12"],
             "base_config": "configs/names.toml", "base_text": "names/names.txt"},
    "word_kjv": {"level": "word", "text": "sonnets/sonnets.txt",
                 "generate": ["--prompt", "shall i compare thee", "--words", "60", "--num-samples", "2", "--temperature", "0.8"]},
    "sonnets_char": {"level": "char", "text": "sonnets/sonnets.txt",
                     "generate": ["--prompt", "Shall I compare thee", "--words", "300", "--temperature", "0.8"],
                     "base_config": "configs/tinyshakespeare_char.toml", "base_text": "tinyshakespeare/input.txt"},
}
LEARNING_RATE_SHARES = {"lr0.1": 0.1, "lr0.3": 0.3, "lr1": 1.0}
VARIANTS = ("scratch", *LEARNING_RATE_SHARES, "frozen", "keep", "scratch_vocabulary")
CHILDREN = {"frozen": "--frozen-child", "scratch_vocabulary": "--random-child"}  # variants that patch train.py


def split_text(source: Path, out: Path, cut_as_wikitext: bool) -> tuple[Path, Path]:
    """The small text's first 90% lines and last 10%, written under ``out``."""
    lines = source.read_text(encoding="utf-8").splitlines()
    if cut_as_wikitext:
        from keras_rnnlm.tokenizer import Tokenizer

        tokenizer = Tokenizer(level="word", split="punctuation", lowercase=False)
        lines = [" ".join(tokenizer.tokens_from_line(line)) for line in lines]
    cut = int(len(lines) * 0.9)
    train, held_out = out / f"{source.stem}.train.txt", out / f"{source.stem}.held_out.txt"
    out.mkdir(parents=True, exist_ok=True)
    train.write_text("\n".join(lines[:cut]) + "\n", encoding="utf-8")
    held_out.write_text("\n".join(lines[cut:]) + "\n", encoding="utf-8")
    return train, held_out


def train(args: list[str], child: str | None = None) -> None:
    command = [sys.executable, __file__, child] if child else [sys.executable, "-m", "keras_rnnlm.train"]
    subprocess.run([*command, *args], check=True)


def unk_share(run: Path, text: Path) -> float:
    """The share of ``text``'s tokens the run reads as ``<unk>``."""
    from keras_rnnlm.config import load_config
    from keras_rnnlm.tokenizer import UNK, Tokenizer
    from keras_rnnlm.vocab import Vocabulary

    tokenizer = Tokenizer.from_config(load_config(run / "config.toml").corpus)
    vocabulary = Vocabulary.load(run / "vocabulary.txt")
    tokens = tokenizer.tokens_from_text(text.read_text(encoding="utf-8"))
    unk = vocabulary.id_from_token(UNK)
    return float((vocabulary.ids_from_tokens(tokens) == unk).mean())


def log_probabilities(run: Path, text: Path) -> tuple[list[str], np.ndarray]:
    """A run's log-probability of each token of ``text``, and the tokens: a bptt run reads
    the text in order from a line break, the state carried (one lane); a windows run reads
    the window_size tokens before each (left-padded with <pad> at the start)."""
    import keras

    from keras_rnnlm.runs import RunFolder
    from keras_rnnlm.tokenizer import Tokenizer

    config, vocabulary, tokenizer, model = RunFolder(run).load()
    tokens = Tokenizer.from_config(config.corpus).tokens_from_text(text.read_text(encoding="utf-8"))
    ids = vocabulary.ids_from_tokens(tokens)
    if config.data.mode == "bptt":
        inputs = np.concatenate([[2], ids[:-1]])[np.newaxis].astype(np.int32)  # 2: the line break a text starts after
        probabilities = keras.ops.convert_to_numpy(model(inputs, training=False))[0]  # (tokens, vocabulary)
    else:
        size = config.data.window_size
        padded = np.concatenate([np.zeros(size, np.int32), ids])
        windows = np.stack([padded[start:start + size] for start in range(len(ids))]).astype(np.int32)
        probabilities = model.predict(windows, batch_size=256, verbose=0)  # (tokens, vocabulary)
    return tokens, np.log(probabilities[np.arange(len(ids)), ids])


def shared_word_perplexities(runs: dict[str, Path], text: Path) -> tuple[dict[str, float], float]:
    """Each bptt run's perplexity over the tokens of ``text`` that every run's vocabulary
    holds, so that no run scores a word as the easier ``<unk>`` that another must name;
    and the share of the text's tokens that counts."""
    from keras_rnnlm.vocab import Vocabulary

    known = set.intersection(*(set(Vocabulary.load(run / "vocabulary.txt").tokens) for run in runs.values())) - {"<unk>"}
    perplexities, share = {}, 0.0
    for name, run in runs.items():
        tokens, logs = log_probabilities(run, text)
        kept = np.array([token in known for token in tokens])
        perplexities[name], share = float(np.exp(-logs[kept].mean())), float(kept.mean())
    return perplexities, share


def history(run: Path) -> list[float]:
    with open(run / "history.csv", encoding="utf-8") as rows:
        return [float(row["val_loss"]) for row in csv.DictReader(rows)]


def samples(run: Path, options: list[str]) -> str:
    return subprocess.run([sys.executable, "-m", "keras_rnnlm.generate", "--model", str(run), "--seed", "0", *options],
                          check=True, capture_output=True, text=True).stdout.strip()


def random_child(argv: list[str]) -> int:
    """``python -m keras_rnnlm.train --init-from RUN`` (the fine-tune's vocabulary) from random weights."""
    from keras_rnnlm import arguments, cli
    from keras_rnnlm import train as training
    from keras_rnnlm.model import build_model

    def random_weights(config, vocabulary_size):
        window_size = None if config.data.mode == "bptt" else config.data.window_size
        return build_model(config.model, window_size, vocabulary_size).get_weights()

    training.starting_weights = random_weights

    def run(argv):
        checked = arguments.train(argv)
        training.train(checked.config, checked.run_dir)
        return 0

    return cli.run(run, argv)


def frozen_child(argv: list[str]) -> int:
    """``python -m keras_rnnlm.train`` with the embeddings held through the first epoch."""
    import keras

    from keras_rnnlm import arguments, cli
    from keras_rnnlm import train as training

    class FreezeEmbeddingsFirstEpoch(keras.callbacks.Callback):
        """Puts the embedding matrix back after every step of the first epoch: with SGD
        that is exactly a frozen matrix; Adam's moments still gather its gradients."""

        def on_train_begin(self, logs=None):
            self.held = [(variable, variable.numpy()) for variable in self.model.trainable_variables
                         if "embedding" in variable.path]
            assert self.held, [variable.path for variable in self.model.trainable_variables]

        def on_train_batch_end(self, batch, logs=None):
            for variable, value in self.held:
                variable.assign(value)

        def on_epoch_end(self, epoch, logs=None):
            self.held = []

    def run(argv):
        checked = arguments.train(argv)
        training.train(checked.config, checked.run_dir, extra_callbacks=[FreezeEmbeddingsFirstEpoch()])
        return 0

    return cli.run(run, argv)


def main() -> int:
    if sys.argv[1:2] == ["--frozen-child"]:
        return frozen_child(sys.argv[2:])
    if sys.argv[1:2] == ["--random-child"]:
        return random_child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", action="append", default=[], metavar="PAIR=RUN",
                        help="the run a pair starts from: word (a WikiText-2 run: required), char, sonnets_char "
                             "(default: trained here)")
    parser.add_argument("--pairs", default="word,char,sonnets_char")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--minutes", type=float, default=4.0, help="training minutes of every variant (default: 4)")
    parser.add_argument("--base-minutes", type=float, default=10.0, help="training minutes of the baby-name base (default: 10)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--output-dir", default="/tmp/keras_rnnlm_fine_tune")
    parser.add_argument("--set", action="append", default=[], help="config overrides for every variant (not the base)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    if unknown := [name for name in variants if name not in VARIANTS]:
        parser.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    pairs = args.pairs.split(",")
    bases = dict(given.split("=", 1) for given in args.base)
    if "word" in pairs and "word" not in bases:
        parser.error("the word pair needs --base word=RUN: python benchmarks/wikitext2.py --config configs/wikitext2_awd.toml")
    if "word_kjv" in pairs and "word_kjv" not in bases:
        parser.error("the word_kjv pair needs --base word_kjv=RUN: python -m keras_rnnlm.train (the built-in corpus)")
    out = Path(args.output_dir)

    for pair in pairs:
        spec = PAIRS[pair]
        train_text, held_out = split_text(Path(args.data) / spec["text"], out / pair, cut_as_wikitext=pair == "word")
        if pair in bases:
            base = Path(bases[pair])
        else:
            base = out / pair / "base"
            train(["--config", str(ROOT / spec["base_config"]), "--corpus", str(Path(args.data) / spec["base_text"]),
                   "--run-name", "base", "--output-dir", str(out / pair), "--set", "train.epochs=1000",
                   "--set", f"train.max_minutes={args.base_minutes}", "--set", "train.sample_length=0"])
        base_rate = _base_config(base)["train"]["learning_rate"]
        common = ["--config", str(base / "config.toml"), "--corpus", str(train_text), "--valid", str(held_out),
                  "--output-dir", str(out / pair), "--set", "train.epochs=1000", "--set", f"train.max_minutes={args.minutes}",
                  "--set", "train.sample_length=0", "--set", "train.early_stopping_patience=3",
                  *(arg for override in args.set for arg in ("--set", override))]
        rows = []
        for name in variants:
            run = out / pair / name
            start = [] if name == "scratch" else ["--init-from", str(base)]
            rate = base_rate * LEARNING_RATE_SHARES.get(name, 1.0 if name.startswith("scratch") else 0.1)
            extra = ["--keep-vocabulary"] if name == "keep" else []
            if not (run / "summary.json").is_file():
                train([*common, *start, *extra, "--run-name", name, "--set", f"train.learning_rate={rate}"], CHILDREN.get(name))
            summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
            rows.append({"variant": name, "learning_rate": rate, "epochs": summary["epochs"], "best_epoch": summary["best_epoch"],
                         "seconds": summary.get("seconds_this_session"), "val_loss": summary["val_loss"],
                         "val_perplexity": summary["val_perplexity"], "unk_share": unk_share(run, held_out),
                         "val_losses": history(run), "samples": samples(run, spec["generate"])})
            print(json.dumps({key: value for key, value in rows[-1].items() if key != "samples"}), flush=True)
        report(spec["level"], base, rows, args.minutes)
        if spec["level"] == "word":
            perplexities, share = shared_word_perplexities({name: out / pair / name for name in variants}, held_out)
            print(f"\nperplexity over the held-out tokens every variant's vocabulary holds ({share:.1%} of them):")
            for name, perplexity in perplexities.items():
                print(f"| {name} | {perplexity:.1f} |")
    return 0


def _base_config(base: Path) -> dict:
    import tomllib

    return tomllib.loads((base / "config.toml").read_text(encoding="utf-8"))


def report(level: str, base: Path, rows: list[dict], minutes: float) -> None:
    """The table; the fine-tunes are compared with the from-scratch model that reads the
    held-out text as they do (scratch_vocabulary) when it was trained, else with scratch."""
    named = {row["variant"]: row for row in rows}
    scratch = named.get("scratch_vocabulary") or named.get("scratch")
    unit = "nats/char" if level == "char" else "perplexity"
    print(f"\n{level} level, from {base}, {minutes:g} minutes each; held out: the small text's last 10% lines; "
          f"compared with {scratch['variant'] if scratch else 'no scratch run'}")
    print(f"| variant | learning rate | epochs (best) | seconds | held-out {unit} | <unk> in held-out | beat scratch's best at epoch |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        figure = f"{row['val_loss']:.3f}" if level == "char" else f"{row['val_perplexity']:.1f}"
        beat = "—"
        if scratch and row is not scratch:
            seconds_an_epoch = (row["seconds"] or 0) / row["epochs"]
            beat = next((f"{epoch + 1} (about {(epoch + 1) * seconds_an_epoch:.0f} s)"
                         for epoch, loss in enumerate(row["val_losses"]) if loss < scratch["val_loss"]), "never")
        print(f"| {row['variant']} | {row['learning_rate']:g} | {row['epochs']} ({row['best_epoch']}) | {row['seconds']} "
              f"| {figure} | {row['unk_share']:.2%} | {beat} |")
    if scratch:
        for row in rows:
            if row is not scratch:
                change = (f"{row['val_loss'] - scratch['val_loss']:+.3f} nats/char" if level == "char"
                          else f"{row['val_perplexity'] / scratch['val_perplexity'] - 1:+.1%} perplexity")
                print(f"{row['variant']} against {scratch['variant']}: {change}")
    for row in rows:
        print(f"\n{row['variant']} samples:\n{row['samples']}")


if __name__ == "__main__":
    sys.exit(main())
