"""A trained run as a TensorFlow SavedModel that serves text without this package:
``python -m keras_rnnlm.export``.

The SavedModel holds the model's weights, the vocabulary (a lookup table) and the
tokenizer (TensorFlow string ops that match the Python tokenizer), so a process that
imports only ``tensorflow`` can load it with ``tf.saved_model.load``, and TensorFlow
Serving can serve it. Three signatures, each with a batch dimension:

- ``serving_default``: ``windows`` int32 (batch, window_size) -> ``probabilities``
  float32 (batch, vocabulary_size), the Keras model itself. For a bptt-mode model the
  input is ``ids`` int32 (batch, time), whole texts left-padded with 0 (a text starts
  with the line-break id 2, as training read it), and the output is the distribution of
  the token after the last one.
- ``next_words``: ``texts`` string (batch,) and ``k`` -> the k most likely next
  ``words`` (batch, k) and their ``probabilities`` (batch, k). ``<pad>`` and ``<unk>``
  are left out; a line break is the word ``<eol>``.
- ``generate``: ``prompts`` string (batch,), ``num_words``, ``temperature`` (0 means
  greedy), ``top_k`` (0 keeps all), ``top_p`` (1 keeps all), ``seed`` and ``max_lines``
  (0 never stops early) -> ``texts`` string (batch,): each prompt, as tokenized, and its
  continuation. It runs the generator's own compiled sampling loop, so it writes exactly
  what :meth:`Generator.generate` writes for the same settings and seed.

Settings out of range fail the request with a TensorFlow ``InvalidArgumentError`` that
says which input is wrong; they never crash the serving process.

Example:
    python -m keras_rnnlm.export --model saved_models/psalms --out exported/psalms

    >>> exported = tf.saved_model.load("exported/psalms")
    >>> exported.signatures["generate"](prompts=tf.constant(["the lord is my"]), num_words=tf.constant(20), ...)
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m keras_rnnlm.export: the arguments are checked before TensorFlow loads
    import sys

    from keras_rnnlm import cli

    sys.exit(cli.main("export"))

import argparse
import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_rnnlm.files import Owned, written_folder
from keras_rnnlm.generate import Generator
from keras_rnnlm.sampling import MAX_TOKENS
from keras_rnnlm.tokenizer import LINE_BREAK
from keras_rnnlm.vocab import PAD_ID, UNK_ID

logger = logging.getLogger("keras_rnnlm")

SIGNATURES = ("serving_default", "next_words", "generate")


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Exports a run folder's model as a self-contained SavedModel.

    The SavedModel is written to a temporary folder beside ``out_dir`` and renamed into
    place, so an interrupted export leaves any earlier export whole.

    Args:
        run_dir: A trained run, e.g. ``saved_models/psalms``.
        out_dir: The SavedModel folder to write. An earlier SavedModel there is replaced.

    Returns:
        ``out_dir``.

    Raises:
        RnnlmError: The run folder is missing or untrained, or ``out_dir`` holds anything
            but a SavedModel that keras_rnnlm exported.
    """
    out_dir = Path(out_dir)
    Owned(out_dir, "export").check("choose another --out")
    generator = Generator.from_run(run_dir)
    tf.get_logger().setLevel(logging.WARNING)  # not "Assets written to <the temporary folder>"
    with written_folder(out_dir) as temporary:
        Owned(temporary, "export").claim()
        build_archive(generator).write_out(str(temporary), verbose=False)
        (temporary / "README.txt").write_text(describe(generator, Path(run_dir)), encoding="utf-8")
    logger.info("exported %s to %s (signatures: %s)", run_dir, out_dir, ", ".join(SIGNATURES))
    return out_dir


def build_archive(generator: Generator) -> keras.export.ExportArchive:
    """The three signatures over a generator's model, vocabulary and tokenizer."""
    model, tokenizer = generator.model, generator.tokenizer
    window_size, vocabulary_size = generator.window_size, len(generator.vocabulary)
    tokens = tf.constant(generator.vocabulary.tokens)  # (vocabulary,): token of each id
    ids_from_tokens = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tokens, tf.range(vocabulary_size, dtype=tf.int32)), default_value=UNK_ID
    )

    banned = np.isin(np.arange(vocabulary_size), generator.logits.banned_ids)  # (vocabulary,)

    def windows_from_tokens(text_tokens):
        """As Generator.windows_from_prompts: the last window_size ids, or for a bptt-mode
        model all of them after a line break; left-padded."""
        if window_size is None:
            line_breaks = tf.RaggedTensor.from_tensor(tf.fill([text_tokens.nrows(), 1], LINE_BREAK))
            text_tokens = tf.concat([line_breaks, text_tokens], axis=1)
        ids = tf.ragged.map_flat_values(ids_from_tokens.lookup, text_tokens)  # (batch, None)
        # Reversed, padded on the right (and cut to the window), reversed back.
        reversed_windows = tf.reverse(ids, axis=[1]).to_tensor(default_value=PAD_ID, shape=[None, window_size])
        return tf.reverse(reversed_windows, axis=[1])  # (batch, window_size or longest)

    def next_probabilities(windows):
        probabilities = tf.cast(model(windows, training=False), tf.float32)  # (batch, [time,] vocabulary)
        return probabilities if window_size else probabilities[:, -1]  # (batch, vocabulary)

    def serving_default(windows):
        return {"probabilities": next_probabilities(windows)}

    def next_words(texts, k):
        choosable = vocabulary_size - 2  # all but <pad> and <unk>
        checks = [
            tf.debugging.assert_greater_equal(k, 1, message="k must be at least 1"),
            tf.debugging.assert_less_equal(k, choosable, message=f"k must be at most {choosable}, the words the model knows"),
        ]
        with tf.control_dependencies(checks):
            windows = windows_from_tokens(tokenizer.graph_tokens_from_texts(texts))
            probabilities = next_probabilities(windows)  # (batch, vocabulary)
        ranked = tf.where(banned, -1.0, probabilities)  # so <pad> and <unk> rank last
        best = tf.math.top_k(ranked, k)
        return {"words": tf.gather(tokens, best.indices), "probabilities": best.values}  # (batch, k) each

    def generate(prompts, num_words, temperature, top_k, top_p, seed, max_lines):
        checks = [
            tf.debugging.assert_greater_equal(num_words, 0, message="num_words must be 0 or more"),
            tf.debugging.assert_less_equal(num_words, MAX_TOKENS, message=f"num_words must be at most {MAX_TOKENS}"),
            tf.debugging.assert_greater_equal(temperature, 0.0, message="temperature must be 0 (greedy) or more"),
            tf.debugging.assert_greater_equal(top_k, 0, message="top_k must be 0 (keep all) or more"),
            tf.debugging.assert_less_equal(top_k, vocabulary_size, message=f"top_k must be at most {vocabulary_size}"),
            tf.debugging.assert_greater(top_p, 0.0, message="top_p must be in (0, 1]"),
            tf.debugging.assert_less_equal(top_p, 1.0, message="top_p must be in (0, 1]"),
            tf.debugging.assert_greater_equal(max_lines, 0, message="max_lines must be 0 (no limit) or more"),
        ]
        with tf.control_dependencies(checks):
            prompt_tokens = tokenizer.graph_tokens_from_texts(prompts)  # (batch, None)
        windows = windows_from_tokens(prompt_tokens)
        new_ids = generator.generate_ids(windows, num_words, temperature, top_k, top_p, seed, max_lines)  # (batch, steps)
        new_ids = tf.ragged.boolean_mask(new_ids, new_ids != PAD_ID)  # a sample that stopped is padded
        new_tokens = tf.ragged.map_flat_values(tf.gather, tokens, new_ids)  # (batch, None)
        return {"texts": tokenizer.graph_text_from_tokens(tf.concat([prompt_tokens, new_tokens], axis=1))}

    def scalar(dtype, name):
        return tf.TensorSpec([], dtype, name=name)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(ids_from_tokens)
    archive.add_endpoint(
        "serving_default", serving_default, [tf.TensorSpec([None, window_size], tf.int32, name="windows" if window_size else "ids")]
    )
    archive.add_endpoint(
        "next_words", next_words, [tf.TensorSpec([None], tf.string, name="texts"), scalar(tf.int32, "k")]
    )
    archive.add_endpoint(
        "generate",
        generate,
        [
            tf.TensorSpec([None], tf.string, name="prompts"),
            scalar(tf.int32, "num_words"),
            scalar(tf.float32, "temperature"),
            scalar(tf.int32, "top_k"),
            scalar(tf.float32, "top_p"),
            scalar(tf.int32, "seed"),
            scalar(tf.int32, "max_lines"),
        ],
    )
    return archive


def describe(generator: Generator, run_dir: Path) -> str:
    """The README.txt written beside the SavedModel."""
    unit = "characters" if generator.tokenizer.level == "char" else "words and punctuation marks"
    if generator.window_size:
        context = f"window_size {generator.window_size} (the model reads the last {generator.window_size} tokens)"
        serving_input = f"  windows      int32   (batch, {generator.window_size})   token ids, left-padded with 0 (<pad>)"
    else:
        context = "trained with truncated BPTT: the model reads the whole text, its state carried token to token"
        serving_input = ("  ids          int32   (batch, time)   token ids of whole texts, left-padded with 0 (<pad>);\n"
                         "                                       a text starts with 2 (<eol>), as training read it")
    return f"""\
A keras_rnnlm language model exported from {run_dir}: text in, text out.
Load it with TensorFlow alone: tf.saved_model.load(this_folder).signatures[NAME](...).
Tokens are {unit}; {context}; vocabulary_size {len(generator.vocabulary)}.

serving_default
{serving_input}
  -> probabilities float32 (batch, {len(generator.vocabulary)})  the next token's distribution

next_words
  texts        string  (batch,)   text to continue (UTF-8)
  k            int32   scalar     how many words, 1 to {len(generator.vocabulary) - 2}
  -> words string (batch, k), probabilities float32 (batch, k); most likely first,
     <pad> and <unk> left out, a line break is <eol>

generate
  prompts      string  (batch,)   text to continue; "" starts as a file starts
  num_words    int32   scalar     tokens to add, 0 to {MAX_TOKENS}
  temperature  float32 scalar     0 = greedy (most likely token); 1 = the model's distribution
  top_k        int32   scalar     sample among the k most likely; 0 keeps all
  top_p        float32 scalar     sample within probability p, in (0, 1]; 1 keeps all
  seed         int32   scalar     same seed, same text
  max_lines    int32   scalar     stop a text after this many line breaks; 0 never stops early
  -> texts string (batch,): each prompt (lower-cased and tokenized) and its continuation

Out-of-range settings fail the request with InvalidArgumentError naming the input.

TensorFlow Serving REST (POST /v1/models/<name>:predict):
  {{"signature_name": "generate", "inputs": {{"prompts": ["the lord is my"], "num_words": 30,
    "temperature": 0.8, "top_k": 40, "top_p": 1.0, "seed": 1, "max_lines": 0}}}}
  {{"inputs": {{"windows": [[0, 0, 0, 5, 9]]}}}}
"""


def main(args: argparse.Namespace) -> int:
    """``python -m keras_rnnlm.export``, its arguments checked (:func:`keras_rnnlm.arguments.export`)."""
    if args.format == "web":
        from keras_rnnlm.web import export_web

        export_web(args.model, args.out)
    else:
        export_run(args.model, args.out)
    return 0
