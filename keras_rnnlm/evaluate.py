"""Scoring a trained run on new text: ``python -m keras_rnnlm.evaluate``.

The text is tokenized exactly as in training and read as one left-padded stream; every
token, line breaks included, is predicted from the ``window_size`` tokens before it.

Example:
    python -m keras_rnnlm.evaluate --model saved_models/psalms --text my_psalm.txt
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from keras_rnnlm import cli
from keras_rnnlm.corpus import find_documents
from keras_rnnlm.data import segments_for_evaluation, windowed_stream, windows_dataset
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.model import compile_model
from keras_rnnlm.runs import RunFolder
from keras_rnnlm.vocab import encode_documents


def evaluate(run_dir: str | Path, text_paths: list[str | Path], batch_size: int = 256) -> dict:
    """Scores a run's model on text files.

    Args:
        run_dir: A run folder written by ``python -m keras_rnnlm.train``.
        text_paths: Files or folders of ``.txt`` files to score.
        batch_size: Windows per step. Defaults to 256.

    Returns:
        ``tokens``, ``cross_entropy`` (nats per token: per character for a character
        model), ``bits_per_token``, ``perplexity``, ``accuracy`` and ``level``.

    Raises:
        RnnlmError: The run folder or a text file is missing or unreadable.
    """
    run = RunFolder(run_dir)
    config, vocabulary, tokenizer, model = run.load()
    compile_model(model, config.train)  # Keras' own loss and metrics; the optimizer is never used
    encoded = encode_documents(find_documents(text_paths), tokenizer, vocabulary)
    stream = windowed_stream(segments_for_evaluation(encoded, config.corpus.sequences), config.data.window_size)
    if stream.num_windows == 0:
        raise RnnlmError("the text has no tokens to evaluate; give a file with some text in it")
    # Keras weights each batch's mean loss by its size, so this is the mean over all tokens.
    scores = model.evaluate(windows_dataset(stream, batch_size), return_dict=True, verbose=0)
    return {
        "tokens": stream.num_windows,
        "cross_entropy": scores["loss"],
        "bits_per_token": scores["loss"] / math.log(2),
        "perplexity": math.exp(scores["loss"]),
        "accuracy": scores["accuracy"],
        "level": config.corpus.level,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keras_rnnlm.evaluate", description="Score a trained model on a text: perplexity and accuracy."
    )
    parser.add_argument("--model", required=True, help="run folder, e.g. saved_models/psalms")
    parser.add_argument("--text", required=True, nargs="+", help="text files (or folders of .txt) to score")
    parser.add_argument("--batch-size", type=int, default=256, help="windows per step (default: 256)")
    args = parser.parse_args(argv)
    scores = evaluate(args.model, args.text, args.batch_size)
    unit = "character" if scores["level"] == "char" else "token"
    print(f"{unit}s evaluated: {scores['tokens']:,}")
    print(f"cross-entropy:    {scores['cross_entropy']:.4f} nats/{unit} ({scores['bits_per_token']:.4f} bits/{unit})")
    print(f"perplexity:       {scores['perplexity']:.2f}")
    print(f"accuracy:         {scores['accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
