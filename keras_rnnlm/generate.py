"""Writing text with a trained model: the prompt slides through the window, one token a step.

The whole sampling loop is one compiled ``tf.function`` (a ``tf.while_loop`` that
carries the window), run for a whole batch of prompts at once and seeded with
stateless random ops, so the same seed gives the same text. It never calls
``model.predict`` once per token.

Example:
    >>> generator = Generator(model, vocabulary, Tokenizer(), window_size=5)
    >>> generator.generate(["the lord is my"], num_tokens=20, temperature=0.8, seed=1)
    ['the lord is my shepherd; i shall not want.\\n...']
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_rnnlm.tokenizer import Tokenizer
from keras_rnnlm.vocab import PAD_ID, UNK_ID, Vocabulary


class Generator:
    """Continues prompts with a trained model.

    Args:
        model: Maps int32 windows (batch, window_size) to probabilities (batch, vocabulary_size).
        vocabulary: The vocabulary the model was trained with.
        tokenizer: The tokenizer the model was trained with.
        window_size: Tokens of context the model reads.
    """

    def __init__(self, model, vocabulary: Vocabulary, tokenizer: Tokenizer, window_size: int):
        self.model = model
        self.vocabulary = vocabulary
        self.tokenizer = tokenizer
        self.window_size = window_size
        # Padding and <unk> are never generated.
        self._banned = tf.constant(np.isin(np.arange(len(vocabulary)), [PAD_ID, UNK_ID]))  # (vocabulary,)
        self.generate_ids = tf.function(
            self._generate_ids,
            input_signature=[
                tf.TensorSpec([None, window_size], tf.int32, name="windows"),
                tf.TensorSpec([], tf.int32, name="num_tokens"),
                tf.TensorSpec([], tf.float32, name="temperature"),
                tf.TensorSpec([], tf.int32, name="top_k"),
                tf.TensorSpec([], tf.int32, name="seed"),
            ],
        )

    def windows_from_prompts(self, prompts: list[str]) -> np.ndarray:
        """Tokenizes prompts as in training; the last ``window_size`` ids, left-padded.

        Returns:
            int32 (len(prompts), window_size).
        """
        windows = np.full((len(prompts), self.window_size), PAD_ID, dtype=np.int32)
        for row, prompt in enumerate(prompts):
            ids = self.vocabulary.ids_from_tokens(self.tokenizer.tokens_from_text(prompt))[-self.window_size :]
            windows[row, self.window_size - len(ids) :] = ids
        return windows

    def generate(
        self, prompts: list[str], num_tokens: int, temperature: float = 1.0, top_k: int = 0, seed: int = 0
    ) -> list[str]:
        """Continues each prompt by ``num_tokens`` tokens.

        Args:
            prompts: Texts to continue; an empty prompt starts as a file does.
            num_tokens: Tokens to add to each prompt.
            temperature: Sharpens (< 1) or flattens (> 1) the distribution; 0 is greedy.
                Defaults to 1.0.
            top_k: Sample only among the k most likely tokens; 0 keeps all. Defaults to 0.
            seed: Same seed, same text. Defaults to 0.

        Returns:
            Each prompt (as tokenized) followed by its continuation, detokenized.
        """
        new_ids = self.generate_ids(
            tf.constant(self.windows_from_prompts(prompts)),
            tf.constant(num_tokens, tf.int32),
            tf.constant(temperature, tf.float32),
            tf.constant(top_k, tf.int32),
            tf.constant(seed, tf.int32),
        ).numpy()
        return [
            self.tokenizer.text_from_tokens(self.tokenizer.tokens_from_text(prompt) + self.vocabulary.tokens_from_ids(ids))
            for prompt, ids in zip(prompts, new_ids)
        ]

    def _generate_ids(self, windows, num_tokens, temperature, top_k, seed):
        vocabulary_size = len(self.vocabulary)
        k = tf.where(top_k > 0, tf.minimum(top_k, vocabulary_size), vocabulary_size)

        def step(index, windows, generated):
            probabilities = self.model(windows, training=False)  # (batch, vocabulary)
            logits = tf.where(self._banned, -np.inf, tf.math.log(tf.cast(probabilities, tf.float32)))
            kth_best = tf.math.top_k(logits, k).values[:, -1:]  # (batch, 1)
            logits = tf.where(logits < kth_best, -np.inf, logits)
            sampled = tf.random.stateless_categorical(
                logits / tf.maximum(temperature, 1e-6), 1, seed=tf.stack([seed, index]), dtype=tf.int32
            )[:, 0]  # (batch,)
            greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)  # (batch,)
            next_ids = tf.where(temperature > 0, sampled, greedy)
            windows = tf.concat([windows[:, 1:], next_ids[:, tf.newaxis]], axis=1)  # (batch, window)
            return index + 1, windows, generated.write(index, next_ids)

        generated = tf.TensorArray(tf.int32, size=num_tokens)
        _, _, generated = tf.while_loop(
            lambda index, *_: index < num_tokens, step, (tf.constant(0), windows, generated)
        )
        # An empty TensorArray cannot be stacked (its element shape is unknown).
        return tf.cond(
            num_tokens > 0,
            lambda: tf.transpose(generated.stack()),  # (batch, num_tokens)
            lambda: tf.zeros([tf.shape(windows)[0], 0], tf.int32),
        )
