"""How long deleting a tf.data iterator takes, with tf.data's autotuning on and off: the
cause of the stalls of issue 26 (a finished run that took minutes to exit) and of the
validation stall before it.

An iterator of a pipeline with autotuning on runs a background thread that wakes at most
once a minute to re-tune the pipeline. Deleting the iterator cancels that thread and
waits for it; when the cancellation is missed, the wait lasts until the thread's next
wake-up. This builds a pipeline shaped as keras_rnnlm's (a map, a prefetch), reads a few
batches, leaves the iterator idle for ``--idle`` seconds (as Keras leaves the validation
iterator during an epoch), deletes it and times the deletion; ``--times`` each, the two
settings alternating, with ``--busy`` processes spinning meanwhile (the stall showed
most under load). keras_rnnlm's pipelines turn autotuning off (``data._without_autotune``).

Usage:
    python benchmarks/iterator_teardown.py [--times 20] [--idle 2] [--busy 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time


def spin() -> None:
    while True:
        pass


def deletion_seconds(autotune: bool, idle: float) -> float:
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = autotune
    dataset = (tf.data.Dataset.range(10_000).map(lambda number: tf.fill([64], number), num_parallel_calls=tf.data.AUTOTUNE)
               .prefetch(tf.data.AUTOTUNE).with_options(options))
    iterator = iter(dataset)
    for _ in range(5):
        next(iterator)
    time.sleep(idle)
    started = time.perf_counter()
    del iterator
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--times", type=int, default=20, help="deletions timed with each setting")
    parser.add_argument("--idle", type=float, default=2.0, help="seconds the iterator lies idle before its deletion")
    parser.add_argument("--busy", type=int, default=2, help="processes kept spinning meanwhile")
    args = parser.parse_args()
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for spinner in spinners:
        spinner.start()
    seconds = {"autotune on": [], "autotune off": []}
    try:
        for number in range(args.times):
            for name, autotune in (("autotune on", True), ("autotune off", False)):
                seconds[name].append(deletion_seconds(autotune, args.idle))
                print(f"{number:2d} {name}: deleted in {seconds[name][-1]:.3f} s", flush=True)
    finally:
        for spinner in spinners:
            spinner.terminate()
    summary = {name: {"median": statistics.median(values), "max": max(values), "over 1 s": sum(value > 1 for value in values)}
               for name, values in seconds.items()}
    for name, figures in summary.items():
        print(f"{name}: median {figures['median']:.3f} s, max {figures['max']:.2f} s, "
              f"{figures['over 1 s']} of {args.times} over 1 s")
    print(json.dumps({"summary": summary, "seconds": seconds}))


if __name__ == "__main__":
    main()
