"""Training speed: keras_rnnlm vs a plain PyTorch loop vs the naive Keras recipe.

All three train the default architecture (vocabulary 10,000, embedding 128, one LSTM of
256, dropout 0.2, window 5, batch 256, Adam 1e-3, gradient norm clipped at 1) on the same
synthetic token stream (Zipf-distributed ids), one epoch of ``--windows`` windows per
measurement, interleaved so machine noise hits all alike; the figure is the median over
``--repeats`` after one warm-up epoch each.

Each path trains in its own process, all its epochs in one run (one ``fit`` call for
the Keras paths, as the CLI), each epoch started when the parent says so.

1. keras_rnnlm: its own model, compile settings, precision and tf.data pipeline (windows
   gathered from one int32 stream, a new permutation each epoch), fed to ``fit`` as
   train.py does (without the CLI's per-epoch callbacks and validation). Its
   precision is the CLI's default "auto": mixed bfloat16 on a CPU whose bfloat16 matmul
   measures faster; the FLOP share still counts float32-equivalent multiply-adds.
2. PyTorch, written plainly as the seeds do: ``nn.Embedding -> nn.LSTM -> nn.Dropout ->
   nn.Linear``, ``CrossEntropyLoss``, Adam, ``clip_grad_norm_``, a ``DataLoader`` over
   window tensors, default threads.
3. The naive Keras recipe: windows materialized in NumPy, one-hot targets,
   ``categorical_crossentropy``, ``fit`` on arrays (fewer windows: the one-hot targets
   take 40 KB a window).

Also measures the float32 matmul peak (a large ``tf.linalg.matmul``) and the share of it
each path achieves, counting ``training_flops_per_window`` (forward and backward
multiply-adds of the recurrent and output layers).

Usage:
    pip install ".[bench]"      # PyTorch (CPU) for path 2
    python benchmarks/train_speed.py [--repeats 3] [--windows 51200] [--paths keras_rnnlm torch naive]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_rnnlm.config import ModelConfig, TrainConfig  # noqa: E402
from keras_rnnlm.data import training_windows, windowed_stream  # noqa: E402
from keras_rnnlm.devices import on_gpu, select_strategy, set_precision  # noqa: E402
from keras_rnnlm.model import build_model, compile_model, training_model  # noqa: E402

PATHS = ("keras_rnnlm", "torch", "naive")

# Weight matrices per recurrent step, as multiples of units x (inputs + units): the gates.
GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}


def training_flops_per_window(config: ModelConfig, window_size: int, vocabulary_size: int) -> int:
    """Floating-point operations to train on one window: 2 per multiply-add, and the
    backward pass counted as twice the forward (gradients for inputs and for weights).

    The forward multiply-adds are the recurrent layers' input and recurrent kernels at
    every position of the window and the output layer once; the Embedding is a lookup.
    Element-wise work (activations, softmax, the optimizer) is not counted.
    """
    multiply_adds = 0
    inputs = config.embedding_dim
    for _ in range(config.layers):
        multiply_adds += window_size * GATES[config.cell] * config.units * (inputs + config.units)
        inputs = config.units
    multiply_adds += config.units * vocabulary_size
    return 2 * 3 * multiply_adds


def token_stream(num_tokens: int, vocabulary_size: int, seed: int = 0) -> np.ndarray:
    """int32 ids in [3, vocabulary_size), Zipf-distributed like words in text."""
    weights = 1.0 / np.arange(1, vocabulary_size - 2)
    rng = np.random.default_rng(seed)
    return (rng.choice(vocabulary_size - 3, size=num_tokens, p=weights / weights.sum()) + 3).astype(np.int32)


def sliding_windows(ids: np.ndarray, window_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window of the stream and the id after it: (n, window_size) and (n,)."""
    windows = np.lib.stride_tricks.sliding_window_view(ids, window_size)[:-1]
    return np.ascontiguousarray(windows), ids[window_size:]


def keras_rnnlm_training(ids, model_config, vocabulary_size, batch_size):
    """keras_rnnlm's model, compile settings and pipeline, fed to ``fit`` as train.py does
    (``training_windows``); returns (windows per epoch, a function that trains ``epochs``
    epochs with the given callback)."""
    strategy = select_strategy("auto")
    policy = set_precision(TrainConfig().precision, strategy)  # as the CLI: "auto" picks by device
    with strategy.scope():
        model = build_model(model_config, 5, vocabulary_size, unroll=not on_gpu(strategy))
        compile_model(model, TrainConfig())
        trainer = training_model(model, TrainConfig())
    keras.mixed_precision.set_global_policy("float32")
    print(f"keras_rnnlm: precision {policy}, LSTM unrolled: {not on_gpu(strategy)}")
    stream = windowed_stream([ids[5:]], window_size=5)  # one segment, left-padded as the CLI pads a file
    feed, steps_per_epoch = training_windows(stream, batch_size, seed=0), -(-stream.num_windows // batch_size)

    def train(epochs, callback):
        trainer.fit(feed, steps_per_epoch=steps_per_epoch, epochs=epochs, callbacks=[callback], shuffle=False, verbose=0)

    return stream.num_windows, train


def naive_keras_training(ids, model_config, vocabulary_size, batch_size, num_windows):
    """The textbook recipe: NumPy windows, one-hot targets, categorical cross-entropy."""
    windows, targets = sliding_windows(ids[: num_windows + 5], 5)
    one_hot = keras.utils.to_categorical(targets, vocabulary_size).astype(np.float32)  # (n, vocabulary)
    model = keras.Sequential([
        keras.Input((5,), dtype="int32"),
        keras.layers.Embedding(vocabulary_size, model_config.embedding_dim),
        keras.layers.LSTM(model_config.units),
        keras.layers.Dropout(model_config.dropout),
        keras.layers.Dense(vocabulary_size, activation="softmax"),
    ])
    model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=1.0))

    def train(epochs, callback):
        model.fit(windows, one_hot, batch_size=batch_size, epochs=epochs, callbacks=[callback], verbose=0)

    return len(windows), train


def torch_model(model_config, vocabulary_size):
    """The PyTorch reference: Embedding -> LSTM -> Dropout -> Linear (logits)."""
    import torch
    from torch import nn

    class LanguageModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocabulary_size, model_config.embedding_dim)
            self.lstm = nn.LSTM(model_config.embedding_dim, model_config.units, batch_first=True)
            self.dropout = nn.Dropout(model_config.dropout)
            self.output = nn.Linear(model_config.units, vocabulary_size)

        def forward(self, windows):  # (batch, window) -> (batch, vocabulary)
            hidden, _ = self.lstm(self.embedding(windows))  # (batch, window, units)
            return self.output(self.dropout(hidden[:, -1]))

    torch.manual_seed(0)
    return LanguageModel()


def torch_training(ids, model_config, vocabulary_size, batch_size):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    windows, targets = sliding_windows(ids, 5)
    loader = DataLoader(
        TensorDataset(torch.from_numpy(windows).long(), torch.from_numpy(targets).long()),
        batch_size=batch_size, shuffle=True,
    )
    model = torch_model(model_config, vocabulary_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_function = torch.nn.CrossEntropyLoss()

    def train(epochs, callback):
        model.train()
        for epoch in range(epochs):
            callback.on_epoch_begin(epoch)
            for batch_windows, batch_targets in loader:
                optimizer.zero_grad()
                loss = loss_function(model(batch_windows), batch_targets)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
            callback.on_epoch_end(epoch)

    return len(windows), train


def matmul_peak_flops(size: int, repeats: int = 5) -> float:
    """Median float32 FLOP/s of a (size x size) @ (size x size) matmul."""
    a, b = tf.random.normal((size, size)), tf.random.normal((size, size))
    multiply = tf.function(lambda: tf.reduce_sum(tf.linalg.matmul(a, b)[:1, :1]))
    multiply()
    calls = max(1, int(2e10 // (2 * size**3)))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            multiply().numpy()
        times.append((time.perf_counter() - started) / calls)
    return 2 * size**3 / statistics.median(times)


class _Turns(keras.callbacks.Callback):
    """Runs each epoch after the first (the warm-up) only when the parent says so, and
    sends it the epoch's windows per second."""

    def __init__(self, connection, num_windows: int):
        super().__init__()
        self.connection, self.num_windows = connection, num_windows

    def on_epoch_begin(self, epoch, logs=None):
        if epoch > 0:
            self.connection.recv()
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.started
        self.connection.send("ready" if epoch == 0 else self.num_windows / seconds)


def _worker(connection, path: str, settings: dict) -> None:
    """Builds one path and trains it for a warm-up epoch and ``repeats`` more, each of
    them in one training run (one ``fit``, as the CLI), started by the parent in turn."""
    keras.utils.set_random_seed(0)
    args = argparse.Namespace(**settings)
    model_config = ModelConfig(embedding_dim=args.embedding, units=args.units)
    ids = token_stream(args.windows + 5, args.vocabulary)
    builders = {
        "keras_rnnlm": lambda: keras_rnnlm_training(ids, model_config, args.vocabulary, args.batch_size),
        "torch": lambda: torch_training(ids, model_config, args.vocabulary, args.batch_size),
        "naive": lambda: naive_keras_training(ids, model_config, args.vocabulary, args.batch_size, args.naive_windows),
    }
    num_windows, train = builders[path]()
    train(args.repeats + 1, _Turns(connection, num_windows))


def measure(worker, paths: list[str], settings: dict, repeats: int, matmul_size: int):
    """Runs ``worker(connection, path, settings)`` for each path in a process of its own
    and lets them train in turns, one epoch each, ``repeats`` times after a warm-up epoch.

    Each path trains in its own process: in one process, PyTorch ran about half as fast
    after a TensorFlow training epoch as before it (benchmarks/RESULTS.md), which would
    flatter keras_rnnlm.

    Returns:
        ({path: [per-epoch speed, ...]}, (matmul peak FLOP/s before the workers, after)).
    """
    peak_before = matmul_peak_flops(matmul_size)  # before any worker runs
    context = multiprocessing.get_context("spawn")
    workers = {}
    for path in paths:
        parent_end, worker_end = context.Pipe()
        process = context.Process(target=worker, args=(worker_end, path, settings), daemon=True)
        process.start()
        workers[path] = (process, parent_end)
        parent_end.recv()  # built and warmed up (one epoch: tracing, first allocations)

    speeds = {path: [] for path in paths}
    for _ in range(repeats):
        for path, (_, connection) in workers.items():
            connection.send("epoch")
            speeds[path].append(connection.recv())
    for process, _ in workers.values():
        process.join()
    # Measured on either side of the workers; the caller takes the higher (a conservative share).
    return speeds, (peak_before, matmul_peak_flops(matmul_size))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--windows", type=int, default=51_200, help="windows per measured epoch (default: 200 batches)")
    parser.add_argument("--naive-windows", type=int, default=20_480, help="for the naive recipe (one-hot: 40 KB each)")
    parser.add_argument("--vocabulary", type=int, default=10_000)
    parser.add_argument("--embedding", type=int, default=ModelConfig().embedding_dim)
    parser.add_argument("--units", type=int, default=ModelConfig().units)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--matmul-size", type=int, default=4096)
    args = parser.parse_args(argv)

    speeds, (peak_before, peak_after) = measure(_worker, args.paths, vars(args), args.repeats, args.matmul_size)
    peak = max(peak_before, peak_after)
    model_config = ModelConfig(embedding_dim=args.embedding, units=args.units)
    flops = training_flops_per_window(model_config, 5, args.vocabulary)

    medians = {path: statistics.median(values) for path, values in speeds.items()}
    print(f"vocabulary {args.vocabulary:,}, embedding {args.embedding}, LSTM {args.units}, window 5, batch "
          f"{args.batch_size}; {args.repeats} repeats, medians; {os.cpu_count()} CPUs; TensorFlow {tf.__version__}")
    print(f"float32 matmul peak ({args.matmul_size}^3): {peak / 1e9:,.0f} GFLOPS (before the workers "
          f"{peak_before / 1e9:,.0f}, after {peak_after / 1e9:,.0f}); "
          f"training FLOPs per window: {flops / 1e6:.1f} M")
    for path, value in medians.items():
        print(f"{path:>12}: {value:9,.0f} windows/s  ({value * flops / peak:5.1%} of the matmul peak)")
    for path in medians:
        if path != "keras_rnnlm" and "keras_rnnlm" in medians:
            print(f"keras_rnnlm vs {path}: {medians['keras_rnnlm'] / medians[path]:.2f}x")
    result = {"windows_per_second": medians, "runs": speeds, "matmul_peak_flops": peak,
              "matmul_peak_flops_before_after": [peak_before, peak_after], "flops_per_window": flops}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
