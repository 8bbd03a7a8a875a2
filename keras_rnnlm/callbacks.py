"""Keras callbacks that the stock set lacks: perplexity beside every loss, lanes reset at
each epoch (bptt mode), the tied output kernel kept in the saved model, an atomic
best-model checkpoint of the stock model, a text sample after every epoch, and the loss /
perplexity plot at the end."""

from __future__ import annotations

import json
import logging
import math
import os
import zipfile
from pathlib import Path

import keras
import numpy as np

from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.generate import Generator
from keras_rnnlm.model import copy_tied_kernel
from keras_rnnlm.runs import read_history, save_model_atomically
from keras_rnnlm.sampling import Sampling
from keras_rnnlm.speedups import copy_optimizer_state

logger = logging.getLogger("keras_rnnlm")


class Perplexity(keras.callbacks.Callback):
    """Logs ``perplexity`` beside ``loss`` and ``val_perplexity`` beside ``val_loss``.

    Perplexity is exp of the mean cross-entropy per token. Keras' ``loss`` is that mean
    (each batch's mean loss weighted by its size, and the model has no other losses), so
    no metric needs to read the (batch, vocabulary) output again for it. The callbacks
    after this one (the CSV log, TensorBoard, the progress bar) see the added values;
    Keras' own callbacks that add to ``logs`` (``ReduceLROnPlateau``) work the same way.
    """

    def on_train_batch_end(self, batch, logs=None):
        _add_perplexities(logs)

    def on_epoch_end(self, epoch, logs=None):
        _add_perplexities(logs)


def _add_perplexities(logs) -> None:
    for key in [key for key in logs or {} if key in ("loss", "val_loss")]:
        logs[key.replace("loss", "perplexity")] = math.exp(logs[key]) if logs[key] < 700 else math.inf


class ResetStates(keras.callbacks.Callback):
    """Starts every lane of a bptt-mode model from zero state at the start of each epoch
    and of each validation pass; within them, the state carries from step to step."""

    def on_epoch_begin(self, epoch, logs=None):
        self._reset()

    def on_test_begin(self, logs=None):
        self._reset()

    def _reset(self):
        for layer in self.model.layers:
            if getattr(layer, "stateful", False):
                layer.reset_states()


class TiedKernel(keras.callbacks.Callback):
    """Keeps the saved model's output kernel equal to the embedding matrix, transposed,
    after every epoch, when the embeddings are tied (:func:`keras_rnnlm.model.copy_tied_kernel`).
    Put it before the callbacks that save or use the model.

    Args:
        model: The stock model that shares the training model's weights.
    """

    def __init__(self, model: keras.Model):
        super().__init__()
        self.saved_model = model

    def on_epoch_end(self, epoch, logs=None):
        copy_tied_kernel(self.saved_model)


class RunBackup(keras.callbacks.Callback):
    """Saves what an interrupted run resumes from, so that it ends exactly where the
    uninterrupted run would have: every variable of the training model and its optimizer
    (weights, moments, step count, learning rate, the dropout layers' random state), the
    epoch, and the counters of the callbacks that decide when to slow down or stop.

    The file is written after each epoch, once that epoch's history row and checkpoint
    are written (put this callback last), to a temporary name and renamed, so a run
    killed at any moment leaves the previous backup whole. :func:`restore_training_state`
    reads it back. ``train`` deletes it once the run's summary is written.

    Args:
        path: The backup file, e.g. ``backup/latest.npz``.
        callbacks: The run's other callbacks; the counters of those in :data:`COUNTERS`
            are saved and restored.
        resumed: The callback counters of the backup this run resumed from, if any.
    """

    # Each callback's counters that carry from one epoch to the next.
    COUNTERS = {
        keras.callbacks.EarlyStopping: ("wait", "best", "best_epoch"),
        keras.callbacks.ReduceLROnPlateau: ("wait", "best", "cooldown_counter"),
    }

    def __init__(self, path: Path, callbacks: list[keras.callbacks.Callback], resumed: dict | None = None):
        super().__init__()
        self.path = path
        self.counted = [callback for callback in callbacks if type(callback) in self.COUNTERS]
        self.resumed = resumed or {}

    def on_train_begin(self, logs=None):
        for callback in self.counted:  # their own on_train_begin has just reset them
            for name, value in self.resumed.get(type(callback).__name__, {}).items():
                setattr(callback, name, value)

    def on_epoch_end(self, epoch, logs=None):
        counters = {
            type(callback).__name__: {name: _plain(getattr(callback, name)) for name in self.COUNTERS[type(callback)]}
            for callback in self.counted
        }
        save_training_state(self.model, self.path, epoch + 1, counters)



def _plain(value):
    return None if value is None else float(value) if isinstance(value, (float, np.floating)) else int(value)


def save_training_state(model: keras.Model, path: Path, epoch: int, counters: dict) -> None:
    """Writes every variable of ``model`` and its optimizer, the epoch and the callback
    counters to ``path`` (one ``.npz`` file), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    variables = [variable.numpy() for variable in model.variables + model.optimizer.variables]
    with open(temporary, "wb") as file:
        np.savez(file, *variables, metadata=json.dumps({"epoch": epoch, "counters": counters}))
    os.replace(temporary, path)


def restore_training_state(model: keras.Model, path: Path) -> tuple[int, dict]:
    """Reads back what :func:`save_training_state` wrote into an identically built model.

    Returns:
        The epoch to start from and the callback counters; (0, {}) without a backup.

    Raises:
        RnnlmError: The backup is damaged or was written for another model.
    """
    if not path.is_file():
        return 0, {}
    model.optimizer.build(model.trainable_variables)
    variables = model.variables + model.optimizer.variables
    try:
        with np.load(path, allow_pickle=False) as saved:
            metadata = json.loads(str(saved["metadata"]))
            values = [saved[f"arr_{number}"] for number in range(len(saved.files) - 1)]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        raise RnnlmError(f"the backup {path} is damaged; delete it to start the run again from its first epoch") from None
    if [value.shape for value in values] != [tuple(variable.shape) for variable in variables]:
        raise RnnlmError(f"the backup {path} was written for another model; delete it to start the run again")
    for variable, value in zip(variables, values):
        variable.assign(value)
    return metadata["epoch"], metadata["counters"]


class BestModelCheckpoint(keras.callbacks.Callback):
    """Saves the stock model whenever the validation loss improves, atomically.

    Training runs a model with speed paths swapped in (:mod:`keras_rnnlm.speedups`); the
    file keeps the stock model that shares its weights, with the optimizer's state.

    Args:
        model: The stock model to save; compiled, as :func:`keras_rnnlm.model.compile_model` does.
        path: Where the ``.keras`` file goes.
        best: The best validation loss so far (a resumed run passes its history's).
    """

    def __init__(self, model: keras.Model, path: Path, best: float = math.inf):
        super().__init__()
        self.saved_model = model
        self.path = path
        self.best = best
        self.best_epoch: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("val_loss", math.nan)
        if loss < self.best:  # False for NaN: a diverged model is never saved.
            self.best, self.best_epoch = loss, epoch + 1
            copy_optimizer_state(self.model.optimizer, self.saved_model.optimizer, self.saved_model.trainable_variables)
            save_model_atomically(self.saved_model, self.path)


class SampleText(keras.callbacks.Callback):
    """Prints a short generated text after every epoch, so a user sees the model learn.

    Args:
        generator: Writes with the model being trained.
        prompt: The fixed text every sample continues.
        length: Tokens per sample.
        temperature: Sampling temperature.
        seed: Seed of the sample; the same every epoch, so samples differ only by the model.
        num_samples: Samples per epoch (a line-mode model writes one line each).
    """

    def __init__(self, generator: Generator, prompt: str, length: int, temperature: float, seed: int, num_samples: int = 1):
        super().__init__()
        self.generator = generator
        self.prompt, self.length, self.temperature, self.seed = prompt, length, temperature, seed
        self.num_samples = num_samples

    def on_epoch_end(self, epoch, logs=None):
        texts = self.generator.generate([self.prompt] * self.num_samples, self.length, Sampling(self.temperature), seed=self.seed)
        logger.info("sample after epoch %d:\n%s\n", epoch + 1, "\n".join(text.rstrip("\n") for text in texts))


class CurvesPlot(keras.callbacks.Callback):
    """Plots loss and perplexity per epoch, train vs validation, from ``history.csv``.

    Reading the CSV rather than this run's ``History`` puts a resumed run's earlier
    epochs on the plot too.

    Args:
        history: The CSVLogger file.
        path: The PNG to write.
    """

    def __init__(self, history: Path, path: Path):
        super().__init__()
        self.history, self.path = history, path

    def on_train_end(self, logs=None):
        plot_curves(read_history(self.history), self.path)


def plot_curves(rows: list[dict[str, float]], path: Path) -> None:
    """Writes a two-panel PNG: cross-entropy and perplexity per epoch, train and validation."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")  # Files only: no window, works on a server without a display.
    from matplotlib import pyplot

    epochs = [int(row["epoch"]) + 1 for row in rows]
    figure, (loss_axes, perplexity_axes) = pyplot.subplots(1, 2, figsize=(10, 4))
    for axes, metric, label in ((loss_axes, "loss", "cross-entropy (nats)"), (perplexity_axes, "perplexity", "perplexity")):
        axes.plot(epochs, [row[metric] for row in rows], "o-", label="train")
        axes.plot(epochs, [row[f"val_{metric}"] for row in rows], "o-", label="validation")
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend()
    perplexity_axes.set_yscale("log")
    figure.tight_layout()
    temporary = path.with_name(f".{path.stem}.partial.png")
    figure.savefig(temporary, format="png", dpi=100)
    pyplot.close(figure)
    os.replace(temporary, path)
