"""Keras callbacks that the stock set lacks: perplexity beside every loss, lanes reset at
each epoch (bptt mode), the time to the first step, the output kernel kept in the saved model, an atomic
best-model checkpoint of the stock model, TensorBoard once an epoch, a text sample after
every epoch, and the loss / perplexity plot at the end. The backup a killed run resumes from is
:mod:`keras_rnnlm.backup`."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import keras

from keras_rnnlm.backup import stateful_layers
from keras_rnnlm.files import written_atomically
from keras_rnnlm.generate import Generator, shown
from keras_rnnlm.model import copy_output_rows
from keras_rnnlm.runs import RunFolder, save_model_atomically
from keras_rnnlm.optimizers import SparseRowsAdam, copy_optimizer_state
from keras_rnnlm.regularization import PENALTIES
from keras_rnnlm.sampling import Sampling

logger = logging.getLogger("keras_rnnlm")


# Keras runs the callbacks' batch hooks in a thread beside the training steps only if
# every callback's are safe there (``async_safe``) or not overridden; one that is neither
# makes every step wait for its logs to be read back before the next step starts
# (benchmarks/epoch_cost.py measures the cost). So the run's callbacks whose batch hooks
# only read the logs say they are safe.


class FirstStepLog(keras.callbacks.Callback):
    """Logs once how long the run took to finish its first training step: reading the
    corpus, building the model and compiling its step (what a large corpus should not slow).

    Args:
        started: ``time.time()`` when the run started.
    """

    async_safe = True

    def __init__(self, started: float):
        super().__init__()
        self.started = started

    def on_train_batch_end(self, batch, logs=None):
        if self.started is not None:
            logger.info("first training step done, %.1f s after the run started", time.time() - self.started)
            self.started = None


class StopOnNaN(keras.callbacks.TerminateOnNaN):
    """Keras' ``TerminateOnNaN``, its batch hook run beside the steps: it stops training
    a step or two after a NaN loss instead of at once, which the run tells the same way
    (the epoch's mean loss is NaN all the same)."""

    async_safe = True


class AveragedWeights:
    """Puts the training optimizer's moving average of the weights (``train.weight_averaging``)
    in place of the weights for what judges and keeps an epoch (validation, the checkpoint,
    the sample), and the raw weights back for training and the backup.

    :attr:`average_in` goes first among the run's callbacks (it acts when validation
    begins), :attr:`raw_back` after the last that reads the weights at an epoch's end and
    before the backup. Keras' ``fit`` puts the average in place when it ends
    (``finalize_variable_values``); ``raw_back`` puts the last epoch's raw weights back
    then too, so that a second ``fit`` (a resumed epoch, then the rest) goes on from the
    raw weights as one ``fit`` would have.
    """

    def __init__(self, trainer: keras.Model):
        self.trainer, self.raw = trainer, None
        self.average_in = keras.callbacks.LambdaCallback(on_test_begin=lambda logs=None: self._average_in())
        self.raw_back = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs=None: self._raw_back(),
                                                       on_train_end=lambda logs=None: self._raw_back())

    def _average_in(self):
        variables = self.trainer.trainable_variables
        self.raw = [variable.numpy() for variable in variables]
        self.trainer.optimizer.finalize_variable_values(variables)  # Keras: the average into the variables

    def _raw_back(self):
        """Puts the raw weights back; they stay kept until the next validation, for the
        end of ``fit``, which has put the average in place again by then."""
        if self.raw is not None:
            for variable, value in zip(self.trainer.trainable_variables, self.raw):
                variable.assign(value)


class TimeBudget(keras.callbacks.Callback):
    """Stops training after the first epoch that ends ``minutes`` after ``started``
    (``train.max_minutes``); the epoch is validated and saved as any other.

    Args:
        minutes: The budget.
        started: ``time.time()`` when the run started.
    """

    def __init__(self, minutes: float, started: float):
        super().__init__()
        self.minutes, self.started = minutes, started

    def on_epoch_end(self, epoch, logs=None):
        spent = (time.time() - self.started) / 60
        if spent >= self.minutes:
            logger.info("stopping after epoch %d: %.1f minutes spent of train.max_minutes = %g", epoch + 1, spent, self.minutes)
            self.model.stop_training = True


class WarmUp(keras.callbacks.Callback):
    """Raises the step size linearly from ``learning_rate / steps`` to ``learning_rate``
    over the first ``steps`` training steps (``train.warmup_steps``), counted by the
    optimizer, so a resumed run goes on where it was. Adam's first steps move every
    weight by about the full step size whatever its gradient; an attention block's
    scores, products of two such weights, then swing far (warm-up as transformers use it;
    Liu et al. 2020). ``keras.callbacks.LearningRateScheduler`` sets the rate per epoch,
    not per step, so this is its own callback.

    Args:
        steps: Steps to reach the full step size.
        learning_rate: The full step size (``train.learning_rate``: a run resumed during
            the warm-up finds its optimizer's rate lowered).
    """

    def __init__(self, steps: int, learning_rate: float):
        super().__init__()
        self.steps, self.target = steps, learning_rate

    def on_train_begin(self, logs=None):
        self.warming = True

    def on_train_batch_begin(self, batch, logs=None):
        if not self.warming:  # past the warm-up: no read of the step count on every step
            return
        step = int(self.model.optimizer.iterations)
        if step <= self.steps:  # the last assignment restores the full rate
            self.model.optimizer.learning_rate.assign(self.target * min(1.0, (step + 1) / self.steps))
        self.warming = step < self.steps


class Perplexity(keras.callbacks.Callback):
    """Logs ``perplexity`` beside ``loss`` and ``val_perplexity`` beside ``val_loss``.

    Perplexity is exp of the mean cross-entropy per token. Keras' ``loss`` is that mean
    (each batch's mean loss weighted by its size), plus in training the activation
    penalties the logs also show (:data:`~keras_rnnlm.regularization.PENALTIES`), taken
    out here; so no metric needs to read the (batch, vocabulary) output again. The callbacks
    after this one (the CSV log, TensorBoard, the progress bar) see the added values;
    Keras' own callbacks that add to ``logs`` (``ReduceLROnPlateau``) work the same way.
    """

    async_safe = True

    def on_train_batch_end(self, batch, logs=None):
        _add_perplexities(logs)

    def on_epoch_end(self, epoch, logs=None):
        _add_perplexities(logs)


def _add_perplexities(logs) -> None:
    for key in [key for key in logs or {} if key in ("loss", "val_loss")]:
        prefix = key[: -len("loss")]
        cross_entropy = logs[key] - sum(logs.get(prefix + penalty, 0.0) for penalty in PENALTIES)
        logs[prefix + "perplexity"] = math.exp(cross_entropy) if cross_entropy < 700 else math.inf


class ResetStates(keras.callbacks.Callback):
    """Starts every lane of a bptt-mode model from zero state at the start of each epoch
    and of each validation pass; within them, the state carries from step to step."""

    def on_epoch_begin(self, epoch, logs=None):
        self._reset()

    def on_test_begin(self, logs=None):
        self._reset()

    def _reset(self):
        for layer in stateful_layers(self.model):
            layer.reset_states()


class OutputKernel(keras.callbacks.Callback):
    """Keeps the saved model's output kernel equal to the rows the training model's output
    reads (the embeddings when tied, its own rows under sampled softmax), transposed,
    after every epoch (:func:`keras_rnnlm.model.copy_output_rows`). Put it before the
    callbacks that save or use the model.

    Under sampled softmax it first brings every row current
    (:meth:`~keras_rnnlm.sampled_softmax.SparseRowsAdam.catch_up`), before validation
    reads the rows and before the epoch's end: a training step updates only the rows it
    touched.

    Args:
        model: The stock model that shares the training model's other weights.
        rows: The (vocabulary, units) matrix.
    """

    def __init__(self, model: keras.Model, rows):
        super().__init__()
        self.saved_model, self.rows = model, rows

    def on_test_begin(self, logs=None):
        self._catch_up()

    def on_epoch_end(self, epoch, logs=None):
        self._catch_up()
        copy_output_rows(self.saved_model, self.rows)

    def _catch_up(self):
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)  # loss scaling
        if isinstance(optimizer, SparseRowsAdam) and optimizer.built:
            optimizer.catch_up()


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


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback writing once an epoch (``update_freq="epoch"``), no
    model graph and no profile: the epoch's training and validation logs and the
    learning rate.

    Keras 3.15's callback also calls ``tf.summary.scalar`` for every log at every
    training batch, even when it writes once an epoch (with no writer set, each call
    writes nothing): about 0.1 to 0.3 s an epoch of the default run, 1 to 2% of its time
    (``benchmarks/epoch_cost.py``). Those calls are all its ``on_train_batch_end`` does
    in this configuration, so it has none: the base class's, which Keras knows does
    nothing (an override of its own would keep the batch hooks out of their thread).

    Args:
        log_dir: Where the event files go.
    """

    def __init__(self, log_dir: str):
        # No model graph: Keras 3 writes it as the training model's JSON, which its speed paths do not serialize.
        super().__init__(log_dir, write_graph=False, update_freq="epoch", profile_batch=0)

    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end


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
        logger.info("sample after epoch %d:\n%s\n", epoch + 1, "\n".join(shown(text.rstrip("\n")) for text in texts))


class CurvesPlot(keras.callbacks.Callback):
    """Plots loss and perplexity per epoch, train vs validation, from the run's
    ``history.csv`` into its ``curves.png``.

    Reading the CSV rather than this run's ``History`` puts a resumed run's earlier
    epochs on the plot too.

    Args:
        run: The run folder.
        train_label: The legend of the training curve.
    """

    def __init__(self, run: RunFolder, train_label: str = "train"):
        super().__init__()
        self.run, self.train_label = run, train_label

    def on_train_end(self, logs=None):
        plot_curves(self.run.read_history(), self.run.curves, self.train_label)


def plot_curves(rows: list[dict[str, float]], path: Path, train_label: str = "train") -> None:
    """Writes a two-panel PNG: cross-entropy and perplexity per epoch, train and validation."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")  # Files only: no window, works on a server without a display.
    from matplotlib import pyplot

    epochs = [int(row["epoch"]) + 1 for row in rows]
    figure, (loss_axes, perplexity_axes) = pyplot.subplots(1, 2, figsize=(10, 4))
    for axes, metric, label in ((loss_axes, "loss", "cross-entropy (nats)"), (perplexity_axes, "perplexity", "perplexity")):
        axes.plot(epochs, [row[metric] for row in rows], "o-", label=train_label)
        axes.plot(epochs, [row[f"val_{metric}"] for row in rows], "o-", label="validation")
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend()
    perplexity_axes.set_yscale("log")
    figure.tight_layout()
    with written_atomically(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    pyplot.close(figure)
