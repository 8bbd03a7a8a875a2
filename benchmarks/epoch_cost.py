"""What an epoch costs through ``train`` (as ``python -m keras_rnnlm.train`` runs it:
validation, the best-model checkpoint, the backup, the history, the sample, TensorBoard)
against a bare ``fit`` of the same model on the same batches, with no callbacks and no
validation: the overhead the run's own work adds to each epoch, and where it goes.

Both run in one process, taking turns (``--repeats`` of each), in the precision the
default config chooses on this machine. An epoch's time is measured from one epoch's
start to the next's (so it includes everything the callbacks do at its end); the first
epoch of each run, which traces the step, is left out; the figure is the median of the
others. The corpus is the first ``--lines`` lines of WikiText-2's training text
(``../shared/data``), the last 10% held out as the CLI does; without it, a synthetic
Zipf text of the same size.

Usage:
    python benchmarks/epoch_cost.py [--lines 2400] [--epochs 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from keras_rnnlm.config import Config  # noqa: E402
from keras_rnnlm.corpus import find_documents  # noqa: E402
from keras_rnnlm.data import training_data  # noqa: E402
from keras_rnnlm.devices import on_gpu, select_strategy, set_precision  # noqa: E402
from keras_rnnlm.model import build_model, compile_model, training_model  # noqa: E402
from keras_rnnlm.splits import corpus_segments  # noqa: E402
from keras_rnnlm.train import train  # noqa: E402

WIKITEXT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "wikitext-2" / "wiki.train.tokens"
HOOKS = ("on_epoch_begin", "on_epoch_end", "on_test_begin", "on_test_end", "on_train_batch_end", "on_test_batch_end")


class EpochClock(keras.callbacks.Callback):
    """Records the time from each epoch's start to the next's (the last: to the end of
    training), so an epoch includes everything the other callbacks do at its end."""

    def __init__(self):
        super().__init__()
        self.starts = []

    def on_epoch_begin(self, epoch, logs=None):
        self.starts.append(time.perf_counter())

    def on_train_end(self, logs=None):
        self.starts.append(time.perf_counter())

    def seconds(self) -> list[float]:
        return [end - start for start, end in zip(self.starts[:-1], self.starts[1:])]


class HookTimes:
    """Times every hook of every callback Keras drives, by epoch and callback class (the
    validation pass is its own entry: from ``on_test_begin`` to ``on_test_end``)."""

    def __init__(self):
        self.seconds = collections.defaultdict(lambda: collections.defaultdict(float))  # epoch -> name -> seconds
        self.epoch = 0
        self._original = keras.callbacks.CallbackList.__init__

    def __enter__(self):
        times, original = self, self._original

        wrapped = set()

        def init(callback_list, *args, **kwargs):
            # A callback is wrapped once, however many lists hold it.
            for callback in kwargs.get("callbacks") or (args[0] if args else None) or ():
                if id(callback) in wrapped:
                    continue
                wrapped.add(id(callback))
                for hook in HOOKS:
                    # A hook the callback does not override is left as it is: Keras runs the
                    # batch hooks beside the steps only if each is unchanged or async-safe.
                    if getattr(type(callback), hook) is not getattr(keras.callbacks.Callback, hook):
                        setattr(callback, hook, times._timed(type(callback).__name__, getattr(callback, hook)))
            original(callback_list, *args, **kwargs)
            epoch_begin, test_begin, test_end = callback_list.on_epoch_begin, callback_list.on_test_begin, callback_list.on_test_end
            callback_list.on_epoch_begin = lambda epoch, logs=None: (setattr(times, "epoch", epoch), epoch_begin(epoch, logs))
            callback_list.on_test_begin = lambda logs=None: (setattr(times, "_validation", time.perf_counter()), test_begin(logs))
            callback_list.on_test_end = lambda logs=None: (test_end(logs), times._add("validation pass", times._validation))

        self._patch = mock.patch.object(keras.callbacks.CallbackList, "__init__", init)
        self._patch.start()
        return self

    def __exit__(self, *exc):
        self._patch.stop()

    def _timed(self, name, hook):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                self._add(name, started)
        return timed

    def _add(self, name, started):
        self.seconds[self.epoch][name] += time.perf_counter() - started

    def per_epoch(self, first: int) -> dict[str, float]:
        """Each callback's median seconds an epoch, epochs ``first`` on."""
        epochs = [self.seconds[epoch] for epoch in sorted(self.seconds) if epoch >= first]
        names = {name for epoch in epochs for name in epoch}
        return {name: statistics.median(epoch.get(name, 0.0) for epoch in epochs) for name in names}


def corpus(lines: int, folder: Path) -> Path:
    """The first ``lines`` lines of WikiText-2's training text, or a synthetic text."""
    path = folder / "corpus.txt"
    if WIKITEXT.is_file():
        with open(WIKITEXT, encoding="utf-8") as source:
            path.write_text("".join(line for _, line in zip(range(lines), source)), encoding="utf-8")
    else:
        import numpy as np

        words = [f"w{rank}" for rank in range(20_000)]
        weights = 1.0 / np.arange(1, len(words) + 1)
        rng = np.random.default_rng(0)
        path.write_text("\n".join(" ".join(rng.choice(words, 57, p=weights / weights.sum())) for _ in range(lines)) + "\n")
    return path


def bare_fit(config: Config, epochs: int) -> list[float]:
    """Epoch times of ``fit`` on the model and batches ``train`` uses, nothing else."""
    keras.utils.set_random_seed(config.train.seed)
    documents = find_documents(config.corpus.paths)
    train_segments, valid_segments, vocabulary = corpus_segments(config, documents)
    data = training_data(config.data, train_segments, valid_segments, config.train.seed)
    strategy = select_strategy(config.train.device)
    set_precision(config.train.precision, strategy)
    with strategy.scope():
        model = build_model(config.model, config.data.window_size, len(vocabulary), unroll=not on_gpu(strategy))
        compile_model(model, config.train)
        trainer = training_model(model, config.train)
    keras.mixed_precision.set_global_policy("float32")
    clock = EpochClock()
    trainer.fit(data.train(0), steps_per_epoch=data.steps_per_pass, epochs=epochs, callbacks=[clock], shuffle=False, verbose=0)
    return clock.seconds()[1:]


def through_train(config: Config, epochs: int, folder: Path) -> tuple[list[float], dict]:
    """Epoch times of ``train`` (the CLI's training), and its callbacks' seconds an epoch
    (the first epoch, which traces, left out)."""
    clock = EpochClock()
    with HookTimes() as hooks:
        train(config, folder, extra_callbacks=[clock], verbose=2)
    keras.mixed_precision.set_global_policy("float32")
    per_epoch = {name: seconds for name, seconds in hooks.per_epoch(first=1).items() if name != "EpochClock"}
    return clock.seconds()[1:], per_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=2400, help="lines of WikiText-2's training text (default: 2,400)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs a run; the first is left out (default: 4)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each (default: 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        config = Config()
        policy = set_precision(config.train.precision, select_strategy(config.train.device))
        keras.mixed_precision.set_global_policy("float32")
        config = dataclasses.replace(
            config, name="epoch_cost",
            corpus=dataclasses.replace(config.corpus, paths=(str(corpus(args.lines, scratch)),)),
            train=dataclasses.replace(config.train, epochs=args.epochs, early_stopping_patience=0,
                                      precision="mixed" if policy.startswith("mixed") else "float32"),
        )
        bare, cli, hooks = [], [], []
        for repeat in range(args.repeats):
            bare += bare_fit(config, args.epochs)
            times, per_epoch = through_train(config, args.epochs, scratch / f"run{repeat}")
            cli += times
            hooks.append(per_epoch)
        steps = json.loads((scratch / "run0" / "summary.json").read_text())["steps_per_epoch"]
        windows = json.loads((scratch / "run0" / "summary.json").read_text())["train_targets"]
    bare_seconds, cli_seconds = statistics.median(bare), statistics.median(cli)
    print(f"{args.lines:,} lines: {windows:,} training windows, {steps} steps an epoch; precision {policy}; "
          f"medians of {len(bare)} epochs each")
    print(f"bare fit: {bare_seconds:.2f} s an epoch, {windows / bare_seconds:,.0f} windows/s")
    print(f"train   : {cli_seconds:.2f} s an epoch, {windows / cli_seconds:,.0f} windows/s "
          f"({cli_seconds / bare_seconds - 1:+.1%} against the bare fit)")
    print("where train's epoch goes beyond the steps (seconds an epoch, median over runs):")
    names = sorted({name for run in hooks for name in run}, key=lambda name: -statistics.median(run.get(name, 0.0) for run in hooks))
    for name in names:
        print(f"  {name:>24}: {statistics.median(run.get(name, 0.0) for run in hooks):6.3f}")
    print(json.dumps({"bare_seconds": bare_seconds, "train_seconds": cli_seconds, "windows": windows,
                      "overhead": cli_seconds / bare_seconds - 1, "policy": policy}))


if __name__ == "__main__":
    main()
