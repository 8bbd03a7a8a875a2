"""Tuning: ``python -m keras_rnnlm.tune`` searches the config space with KerasTuner.

Each trial is a config (the base config with the searched keys set by KerasTuner's
oracle) trained by :func:`keras_rnnlm.train.train`, the same pipeline and callbacks as
``train``, into a run folder of its own; the objective is its best validation
cross-entropy (shown as perplexity). The search stops after ``max_trials`` trials or
``max_minutes``, whichever comes first: the trial running at the deadline stops there,
and counts with its best epoch so far.

The tuning folder (``saved_models/<name>/``):
    tune.json      what is searched (config, search, strategy), time spent, each trial's record
    oracle/        KerasTuner's state: the same command continues a killed search where it stopped
    corpus/<key>/  the tokenized corpus, prepared once for each tokenization the trials use
    trials/<id>/   each trial's run folder
    trials.csv     the trials: searched values, best validation perplexity, epochs, seconds
    trials.png     perplexity against the settings that mattered most
    best.toml      the best trial's config, for ``train --config`` (on the original corpus)
    best/          the best trial's run folder: ``generate --model``, ``export --model``

Example:
    python -m keras_rnnlm.tune --search configs/search/default.toml --max-trials 20 --max-minutes 30
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m keras_rnnlm.tune: the arguments are checked before TensorFlow loads
    import sys

    from keras_rnnlm import cli

    sys.exit(cli.main("tune"))

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import math
import shutil
import time
from pathlib import Path

import keras
import keras_tuner

from keras_rnnlm.config import Config, config_to_dict, config_to_toml
from keras_rnnlm.corpus import find_documents
from keras_rnnlm.devices import select_strategy, set_precision
from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.keras_private import keras_tuner_tracebacks_off
from keras_rnnlm.prepare import prepare
from keras_rnnlm.files import Owned, write_atomically, written_folder
from keras_rnnlm.runs import RunFolder
from keras_rnnlm.search_space import Dimension, config_with
from keras_rnnlm.tune_report import format_table, plot_trials, shown, write_table
from keras_rnnlm.shards import prepared_settings
from keras_rnnlm.train import train

# The search's own log; while trials run, the rest of keras_rnnlm's (a trial's set-up and
# summary) is lowered to warnings, which would otherwise bury it.
logger = logging.getLogger("keras_rnnlm.tune")

STRATEGIES = ("bayesian", "random", "hyperband")
OBJECTIVE = "val_loss"  # the validation cross-entropy; the table shows exp(it), the perplexity
ENDED = ("COMPLETED", "FAILED", "INVALID")


def tune(
    config: Config, space: tuple[Dimension, ...], folder: str | Path, strategy: str = "bayesian",
    max_trials: int = 20, max_minutes: float = 30.0, overwrite: bool = False,
) -> dict:
    """Searches ``space`` around ``config`` and writes the tuning folder.

    Args:
        config: The base config; its ``train.seed`` seeds the search and every trial.
        space: The searched keys (:func:`keras_rnnlm.search_space.read_search`).
        folder: The tuning folder; one holding this same search continues it.
        strategy: "bayesian", "random" or "hyperband" (KerasTuner's oracles).
        max_trials: Trials in all, those of earlier runs of this search included.
        max_minutes: Minutes in all, those of earlier runs included.
        overwrite: Start again, deleting what the folder holds.

    Returns:
        ``{"best_trial", "val_perplexity", "trials", "minutes"}``; best_trial is None
        when no trial completed.

    Raises:
        RnnlmError: The folder holds another search, or every trial failed.
    """
    folder = Path(folder)
    with RunFolder(folder).lock():
        search = Search(config, space, folder, strategy, overwrite)
        with contextlib.redirect_stdout(io.StringIO()):  # KerasTuner prints "Reloading Tuner from …"; the search logs its own line
            tuner = _tuner(search, strategy, max_trials)
        search.start(max_trials, max_minutes)
        try:
            with _trials_quiet():
                tuner.search(verbose=0)
        except _Stop as stop:
            logger.info("%s", stop)
        except RuntimeError as error:  # KerasTuner's "Number of consecutive failures exceeded the limit"
            if "consecutive failures" not in str(error):
                raise
            raise RnnlmError(f"{tuner.oracle.max_consecutive_failed_trials} trials in a row failed, the last with: "
                             f"{search.last_failure}; narrow the search file's ranges") from None
        finally:
            search.save_state()
        return search.report(tuner.oracle.trials, final=True)


class _Stop(Exception):
    """The search is over: its trials or its time are spent."""


class Search:
    """What a tuning run knows besides KerasTuner's oracle: the base config, the folder,
    the corpus prepared for each tokenization, the time spent and each trial's record.

    Args:
        config: The base config.
        space: The searched keys.
        folder: The tuning folder.
        strategy: The oracle's name (part of what must match to continue a search).
        overwrite: Start again.
    """

    def __init__(self, config: Config, space: tuple[Dimension, ...], folder: Path, strategy: str, overwrite: bool):
        self.space, self.folder = space, folder
        self.state_path = folder / "tune.json"
        identity = {"config": config_to_dict(config), "search": [dimension.describe() for dimension in space],
                    "strategy": strategy}
        owned = Owned(folder, "search")
        owned.check("choose another --run-name")  # a folder of the user's is never touched, --overwrite or not
        if overwrite:
            owned.clear()
        if self.state_path.is_file():
            self.state = _read_state(self.state_path)
            if {key: self.state.get(key) for key in identity} != identity:
                raise RnnlmError(f"{folder} holds a search of another config, search file or strategy; pass --overwrite to "
                                 "start again, or --run-name NAME for another folder")
            started = len(self.state["trials"])
            logger.info("continuing the search in %s (%d trial%s, %.1f minutes so far)",
                        folder, started, "" if started == 1 else "s", self.state["seconds"] / 60)
        else:
            # "auto" precision times a matmul, which could choose differently from one trial to
            # the next: it is decided once, and best.toml states what the trials used.
            self.state = {**identity, "precision": _pinned_precision(config), "seconds": 0.0, "trials": {}}
        owned.claim()
        self.base = dataclasses.replace(config, train=dataclasses.replace(config.train, precision=self.state["precision"]))
        self.session_started, self.seconds_before = time.time(), self.state["seconds"]
        self.save_state()
        self.last_failure = ""

    def start(self, max_trials: int, max_minutes: float) -> None:
        self.max_trials, self.budget = max_trials, max_minutes * 60

    def seconds_spent(self) -> float:
        return self.seconds_before + time.time() - self.session_started

    def save_state(self) -> None:
        self.state["seconds"] = round(self.seconds_spent(), 1)
        write_atomically(self.state_path, json.dumps(self.state, indent=1) + "\n")

    def before_trial(self, trials: dict) -> None:
        """Ends the search once its trials or its time are spent.

        Raises:
            _Stop: Saying which.
        """
        ended = sum(trial.status in ENDED for trial in trials.values())
        if ended >= self.max_trials:
            raise _Stop(f"the search ran its {self.max_trials} trials")
        if self.seconds_spent() >= self.budget:
            raise _Stop(f"the search spent its {self.budget / 60:g} minutes ({ended} trial{'s' if ended != 1 else ''})")

    def trial_config(self, values: dict, trial_id: str) -> Config:
        """The config a trial trains: the base with the searched values (Hyperband's
        ``tuner/epochs`` as ``train.epochs``), reading the corpus prepared for its tokenization.

        Raises:
            RnnlmError: The values do not go together (the config's message).
        """
        searched = {key: value for key, value in self.typed(values).items() if not key.startswith("tuner/")}
        if "tuner/epochs" in values:
            searched["train.epochs"] = int(values["tuner/epochs"])
        config = config_with(self.base, searched)
        corpus = dataclasses.replace(config.corpus, paths=(str(self._prepared(config)),), valid_paths=())
        return dataclasses.replace(config, name=f"trial_{trial_id}", corpus=corpus)

    def typed(self, values: dict) -> dict:
        """A trial's values, each in its config key's type: KerasTuner hands a choice of
        booleans back as 0 or 1."""
        kinds = {dimension.key: dimension.kind for dimension in self.space}
        return {key: kinds[key](value) if key in kinds else value for key, value in values.items()}

    def _prepared(self, config: Config) -> Path:
        """The corpus tokenized as ``config`` says, prepared on first use."""
        settings = prepared_settings(config, bool(find_documents(config.corpus.valid_paths)))
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        out = self.folder / "corpus" / key
        if not (out / "manifest.json").is_file():
            logger.info("tokenizing the corpus into %s (once for every trial with these settings)", out)
            prepare(config, out)
        return out

    def run_trial(self, trial) -> dict:
        """Trains one trial; its metrics for KerasTuner.

        Raises:
            keras_tuner.errors.FailedTrialError: The trial's values do not go together, or
                its training failed (a loss that became NaN): the search goes on.
            keras_tuner.errors.FatalError: Anything else (a bug): the search stops.
        """
        values = self.typed(trial.hyperparameters.values)
        settings = ", ".join(f"{key}={shown(value)}" for key, value in values.items() if not key.startswith("tuner/"))
        record = self.state["trials"].setdefault(trial.trial_id, {"seconds": 0.0})
        logger.info("trial %s: %s (%.1f of %g minutes spent)", trial.trial_id, settings,
                    self.seconds_spent() / 60, self.budget / 60)
        started = time.time()
        clock = TrialClock(self, deadline=self.session_started + self.budget - self.seconds_before)
        try:
            config = self.trial_config(values, trial.trial_id)
            summary = train(config, self.folder / "trials" / trial.trial_id, extra_callbacks=[clock], verbose=0)
        except RnnlmError as error:
            self.last_failure = record["failed"] = str(error)
            logger.info("trial %s failed: %s", trial.trial_id, error)
            raise keras_tuner.errors.FailedTrialError(str(error)) from None
        except Exception as error:
            raise keras_tuner.errors.FatalError(f"trial {trial.trial_id}: {type(error).__name__}: {error}") from error
        finally:
            record["seconds"] = round(record["seconds"] + time.time() - started, 1)
            self.save_state()
        record["cut_by_deadline"] = clock.cut
        logger.info("trial %s: validation perplexity %.2f (best epoch %d of %d)%s", trial.trial_id,
                    summary["val_perplexity"], summary["best_epoch"], summary["epochs"],
                    ", stopped at the deadline" if clock.cut else "")
        return {OBJECTIVE: summary["val_loss"]}

    def report(self, trials: dict, final: bool = False) -> dict:
        """Writes trials.csv, trials.png, best.toml and best/ from the trials so far, and
        logs the table at the end (:mod:`keras_rnnlm.tune_report`)."""
        rows = [self._row(trial) for trial in sorted(trials.values(), key=lambda trial: trial.trial_id)]
        keys = [dimension.key for dimension in self.space]
        write_table(rows, ["trial", "status", *keys, "val_perplexity", "val_loss", "best_epoch", "epochs", "seconds", "note"],
                    self.folder / "trials.csv")
        done = [row for row in rows if math.isfinite(row["val_loss"])]
        best = min(done, key=lambda row: row["val_loss"]) if done else None
        if best is not None:
            self._keep_best(best, trials[best["trial"]])
        whole = [row for row in done if not row["note"]]  # a trial cut at the deadline would mislead the plot
        if len(whole) >= 2:
            plot_trials(whole, self.space, self.folder / "trials.png")
        if final:
            logger.info("%s", format_table(rows, ["trial", "status", *keys, "val_perplexity", "best_epoch", "epochs", "seconds"]))
            if best is None:
                logger.info("no trial completed; see the notes in %s", self.folder / "trials.csv")
            else:
                logger.info("best: trial %s, validation perplexity %.2f; its config: %s (python -m keras_rnnlm.train "
                            "--config %s), its model: %s", best["trial"], best["val_perplexity"], self.folder / "best.toml",
                            self.folder / "best.toml", self.folder / "best")
        return {"best_trial": best and best["trial"], "val_perplexity": best and best["val_perplexity"],
                "trials": len(rows), "minutes": round(self.seconds_spent() / 60, 1)}

    def _row(self, trial) -> dict:
        record = self.state["trials"].get(trial.trial_id, {})
        summary_path = self.folder / "trials" / trial.trial_id / "summary.json"
        summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
        note = record.get("failed", "") or ("stopped at the deadline" if record.get("cut_by_deadline") else "")
        values = self.typed(trial.hyperparameters.values)
        return {
            "trial": trial.trial_id, "status": str(trial.status).lower(),
            **{dimension.key: values.get(dimension.key, "") for dimension in self.space},
            "val_perplexity": summary.get("val_perplexity", math.nan), "val_loss": summary.get("val_loss", math.nan),
            "best_epoch": summary.get("best_epoch", ""), "epochs": summary.get("epochs", ""),
            "seconds": record.get("seconds", ""), "note": note,
        }

    def _keep_best(self, best: dict, trial) -> None:
        """best.toml (the trial's config on the original corpus) and best/ (its run folder)."""
        if self.state.get("best") == best["trial"] and (self.folder / "best").is_dir():
            return
        config = self.trial_config(trial.hyperparameters.values, best["trial"])
        # The original text, by absolute paths: best.toml trains from wherever it is run.
        paths, valid_paths = (tuple(str(Path(path).resolve()) for path in paths)
                              for paths in (self.base.corpus.paths, self.base.corpus.valid_paths))
        corpus = dataclasses.replace(config.corpus, paths=paths, valid_paths=valid_paths)
        config = dataclasses.replace(config, name=f"{self.folder.name}_best", corpus=corpus)
        header = (f"# The best trial (trial {best['trial']}) of the search in {self.folder}: validation perplexity "
                  f"{best['val_perplexity']:.2f}.\n# Train it again: python -m keras_rnnlm.train --config {self.folder / 'best.toml'}\n\n")
        write_atomically(self.folder / "best.toml", header + config_to_toml(config))
        with written_folder(self.folder / "best") as partial:
            shutil.copytree(self.folder / "trials" / best["trial"], partial, dirs_exist_ok=True)
        self.state["best"] = best["trial"]
        self.save_state()


def _read_state(path: Path) -> dict:
    """A search's tune.json.

    Raises:
        RnnlmError: The file is not the state a search writes (edited, or cut off).
    """
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(state, dict) and isinstance(state.get("trials"), dict)
                and isinstance(state.get("seconds"), (float, int)) and state.get("precision") in ("mixed", "float32")):
            raise ValueError("not a search's state")
    except (OSError, ValueError):
        raise RnnlmError(f"{path} is damaged; pass --overwrite to start the search again, or --run-name NAME for "
                         "another folder") from None
    return state


class TrialClock(keras.callbacks.Callback):
    """Stops a trial at the search's deadline (validation still runs, so the epoch counts),
    logs each epoch's validation perplexity, and saves the time spent.

    Args:
        search: The search, whose state keeps the time.
        deadline: The ``time.time()`` at which the search's minutes are spent.
    """

    def __init__(self, search: Search, deadline: float):
        super().__init__()
        self.search, self.deadline, self.cut = search, deadline, False

    def on_train_batch_end(self, batch, logs=None):
        if time.time() >= self.deadline:
            self.model.stop_training = self.cut = True

    def on_epoch_end(self, epoch, logs=None):
        logger.info("  epoch %d: validation perplexity %.2f", epoch + 1, (logs or {}).get("val_perplexity", math.nan))
        self.search.save_state()


def _tuner(search: Search, strategy: str, max_trials: int):
    """KerasTuner's tuner of ``strategy``, whose trials train as ``search`` says."""
    oracles = {"bayesian": keras_tuner.BayesianOptimization, "random": keras_tuner.RandomSearch,
               "hyperband": keras_tuner.Hyperband}

    class ConfigTuner(oracles[strategy]):
        def run_trial(self, trial, *args, **kwargs):
            return search.run_trial(trial)

        def pre_create_trial(self):
            search.report(self.oracle.trials)
            search.before_trial(self.oracle.trials)

    space = keras_tuner.HyperParameters()
    for dimension in search.space:
        declare(space, dimension)
    budget = ({"max_epochs": search.base.train.epochs, "factor": 3} if strategy == "hyperband"
              else {"max_trials": max_trials})
    return ConfigTuner(
        objective=keras_tuner.Objective(OBJECTIVE, "min"), hyperparameters=space, seed=search.base.train.seed,
        directory=str(search.folder), project_name="oracle", **budget,
    )


def declare(space: keras_tuner.HyperParameters, dimension: Dimension) -> None:
    """Adds ``dimension`` to KerasTuner's ``space``: a Choice, or an Int or Float interval."""
    if dimension.choices:
        space.Choice(dimension.key, list(dimension.choices))
    elif dimension.kind is int:
        space.Int(dimension.key, dimension.low, dimension.high, step=dimension.step,
                  sampling="log" if dimension.log else "linear")
    else:
        space.Float(dimension.key, dimension.low, dimension.high, step=dimension.step,
                    sampling="log" if dimension.log else "linear")


def _pinned_precision(config: Config) -> str:
    """``train.precision``, "auto" decided once here."""
    if config.train.precision != "auto":
        return config.train.precision
    caller_policy = keras.mixed_precision.global_policy()
    try:
        policy = set_precision("auto", select_strategy(config.train.device))
    finally:
        keras.mixed_precision.set_global_policy(caller_policy)
    return "mixed" if policy.startswith("mixed") else "float32"


@contextlib.contextmanager
def _trials_quiet():
    """keras_rnnlm's log at warnings, the search's at INFO, and KerasTuner's tracebacks of
    failed trials off, for a while."""
    package = logging.getLogger("keras_rnnlm")
    kept = package.level, logger.level
    package.setLevel(logging.WARNING)
    logger.setLevel(logging.INFO)
    try:
        with keras_tuner_tracebacks_off():
            yield
    finally:
        package.setLevel(kept[0])
        logger.setLevel(kept[1])


def main(args) -> int:
    """``python -m keras_rnnlm.tune``, its arguments checked (:func:`keras_rnnlm.arguments.tune`)."""
    tune(args.config, args.space, args.folder, args.strategy, args.max_trials, args.max_minutes, args.overwrite)
    return 0
