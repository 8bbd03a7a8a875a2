"""What an interrupted run resumes from, so that it ends exactly where the uninterrupted
run would have: :class:`RunBackup` writes ``backup/latest.npz`` at every epoch's end (and
every ``train.backup_every_steps`` steps), :func:`restore_training_state` reads it back.

Keras' own ``BackupAndRestore`` is not enough for that: it leaves out the dropout layers'
random state and the epoch's running metrics, restarts an epoch it was inside from its
first batch, writes its two files one after the other (a kill between them leaves them
disagreeing), and keeps no callback counters.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.files import written_atomically


@dataclass(frozen=True)
class TrainingState:
    """What a backup holds (:func:`save_training_state`).

    Attributes:
        epoch: The epoch to go on with.
        step: Batches of that epoch already trained (0: none, the backup of an epoch's end).
        counters: The early-stopping and learning-rate callbacks' counters, by class name.
        metrics: The values of the model's metric variables at ``step`` (the epoch's running
            loss and accuracies), to put back once Keras has reset them at the epoch's start.
        variables: The values of the model's variables (its state in bptt mode included).
    """

    epoch: int
    step: int
    counters: dict
    metrics: list[np.ndarray]
    variables: list[np.ndarray]


class RunBackup(keras.callbacks.Callback):
    """Saves what an interrupted run resumes from, so that it ends exactly where the
    uninterrupted run would have: every variable of the training model and its optimizer
    (weights, moments, step count, learning rate, the dropout layers' random state, the
    lanes' state in bptt mode), the epoch and step, the epoch's running metrics, and the
    counters of the callbacks that decide when to slow down or stop.

    A backup is written after each epoch, once that epoch's history row and checkpoint are
    written (put this callback last), and every ``every_steps`` steps inside an epoch, to a
    temporary name and renamed, so a run killed at any moment leaves the previous backup
    whole. :func:`restore_training_state` reads it back; ``train`` deletes it once the
    run's summary is written.

    Args:
        path: The backup file, e.g. ``backup/latest.npz``.
        callbacks: The run's other callbacks; the counters of those in :data:`COUNTERS`
            are saved and restored.
        every_steps: Also back up every this many steps inside an epoch; 0 never.
        steps_per_epoch: Batches in a whole epoch.
        resumed: The backup this run resumed from, if any.
    """

    # Each callback's counters that carry from one epoch to the next.
    COUNTERS = {
        keras.callbacks.EarlyStopping: ("wait", "best", "best_epoch"),
        keras.callbacks.ReduceLROnPlateau: ("wait", "best", "cooldown_counter"),
    }

    def __init__(self, path: Path, callbacks: list[keras.callbacks.Callback], every_steps: int = 0,
                 steps_per_epoch: int = 0, resumed: TrainingState | None = None):
        super().__init__()
        self.path, self.every_steps, self.steps_per_epoch = path, every_steps, steps_per_epoch
        self.counted = [callback for callback in callbacks if type(callback) in self.COUNTERS]
        self.counters = resumed.counters if resumed else {}
        self.inside_epoch = resumed if resumed and resumed.step else None  # put back at that epoch's start
        self.epoch, self.steps_before = 0, 0
        # With no backups inside epochs its batch hook only counts, and Keras may run the
        # run's batch hooks in a thread beside the steps (see keras_rnnlm.callbacks); a
        # backup inside an epoch must read the variables between two steps.
        self.async_safe = not every_steps

    def on_train_begin(self, logs=None):
        for callback in self.counted:  # their own on_train_begin has just reset them
            for name, value in self.counters.get(type(callback).__name__, {}).items():
                setattr(callback, name, value)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.steps_before = epoch, 0
        if self.inside_epoch is not None:  # the rest of an epoch a killed run was inside
            resumed, self.inside_epoch = self.inside_epoch, None
            # After Keras reset the metrics and the lanes' state was reset: put them back.
            for variable, value in zip(state_variables(self.model) + self.model.metrics_variables, resumed.variables + resumed.metrics):
                variable.assign(value)
            self.steps_before = resumed.step

    def on_train_batch_end(self, batch, logs=None):
        done = self.steps_before + batch + 1
        if self.every_steps and done % self.every_steps == 0 and done < self.steps_per_epoch:
            self._save(self.epoch, done)

    def on_epoch_end(self, epoch, logs=None):
        self.counters = {
            type(callback).__name__: {name: _plain(getattr(callback, name)) for name in self.COUNTERS[type(callback)]}
            for callback in self.counted
        }
        self._save(epoch + 1, 0)

    def _save(self, epoch: int, step: int) -> None:
        save_training_state(self.model, self.path, TrainingState(
            epoch, step, self.counters, [v.numpy() for v in self.model.metrics_variables],
            [v.numpy() for v in state_variables(self.model)],
        ))


def state_variables(model: keras.Model) -> list:
    """The model's variables and, in bptt mode, the lanes' carried state (which Keras'
    stateful RNN layers keep outside their variables; the attention memory is among the
    variables already, so it is not listed twice)."""
    variables = model.variables
    known = {id(variable) for variable in variables}
    return variables + [state for layer in stateful_layers(model) for state in layer.states if id(state) not in known]


def stateful_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of ``model`` that carry a state from batch to batch, those of the
    models inside it included (a :class:`~keras_rnnlm.sampled_softmax.SampledSoftmaxTrainer`
    holds its recurrent layers in a ``Sequential``)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(stateful_layers(layer))
        elif getattr(layer, "stateful", False):
            found.append(layer)
    return found


def _plain(value):
    return None if value is None else float(value) if isinstance(value, (float, np.floating)) else int(value)


def save_training_state(model: keras.Model, path: Path, state: TrainingState) -> None:
    """Writes ``state`` and the model's optimizer variables to ``path`` (one ``.npz``
    file), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"variable_{number}": value for number, value in enumerate(state.variables)}
    arrays.update({f"optimizer_{number}": variable.numpy() for number, variable in enumerate(model.optimizer.variables)})
    arrays.update({f"metric_{number}": value for number, value in enumerate(state.metrics)})
    metadata = {"epoch": state.epoch, "step": state.step, "counters": state.counters}
    with written_atomically(path) as temporary, open(temporary, "wb") as file:
        np.savez(file, metadata=json.dumps(metadata), **arrays)


def restore_training_state(model: keras.Model, path: Path) -> TrainingState | None:
    """Reads back what :func:`save_training_state` wrote into an identically built model:
    its variables and its optimizer's are assigned (the metrics' are Keras' to reset; see
    :class:`RunBackup`).

    Returns:
        The state, or None without a backup.

    Raises:
        RnnlmError: The backup is damaged or was written for another model.
    """
    if not path.is_file():
        return None
    model.optimizer.build(model.trainable_variables)
    try:
        with np.load(path, allow_pickle=False) as saved:
            metadata = json.loads(str(saved["metadata"]))

            def arrays(kind):
                return [saved[f"{kind}_{number}"] for number in range(sum(name.startswith(kind) for name in saved.files))]

            variables, optimizer, metrics = arrays("variable"), arrays("optimizer"), arrays("metric")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        raise RnnlmError(f"the backup {path} is damaged; train again with --overwrite to start the run from its first epoch") from None
    targets = state_variables(model) + model.optimizer.variables
    if [value.shape for value in variables + optimizer] != [tuple(variable.shape) for variable in targets]:
        raise RnnlmError(f"the backup {path} was written for another model; train again with --overwrite to start the run from its first epoch")
    for variable, value in zip(targets, variables + optimizer):
        variable.assign(value)
    return TrainingState(metadata["epoch"], metadata["step"], metadata["counters"], metrics, variables)
