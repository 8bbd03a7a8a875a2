"""What a training step across workers pays to communicate: the all-reduce of the
gradients, measured on loopback, and a model of it on real networks.

Starts two worker processes (MultiWorkerMirroredStrategy on free loopback ports, as
``python -m keras_rnnlm.launch`` does) that all-reduce a float32 tensor the size of a
model's gradients, and prints the median time. Then models a step at 2 to 16 workers on
10 and 100 Gb/s networks: a ring all-reduce moves 2 (N - 1) / N times the gradient's
bytes through each worker's link, and keras_rnnlm all-reduces twice a step while it
clips (the summed gradient's norm, then Keras' own sum). The step's compute is
``--step-ms`` whatever the number of workers: each worker's own batch is held fixed (the
global batch grows with the workers), so communication is all that is added.

Usage:
    python benchmarks/allreduce.py [--repeats 20] [--step-ms 25]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# Gradient sizes (parameters) of the configs: the default architecture (embedding 128,
# LSTM 256, a Dense output) at the default 10,000-token vocabulary and at WikiText-2's 33,278.
MODELS = {
    "default, vocabulary 10,000": 10_000 * 128 + 4 * 256 * (128 + 256 + 1) + 256 * 10_000 + 10_000,
    "WikiText-2 windows, vocabulary 33,278": 33_278 * 128 + 4 * 256 * (128 + 256 + 1) + 256 * 33_278 + 33_278,
}


def worker(index: int, ports: list[int], parameters: int, repeats: int) -> None:
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{port}" for port in ports]},
                                          "task": {"type": "worker", "index": index}})
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    gradient = tf.random.stateless_normal([parameters], seed=[index, 0])

    @tf.function
    def all_reduce():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("SUM", gradient))

    times = []
    for repeat in range(repeats + 3):
        started = time.perf_counter()
        result = all_reduce()
        float(strategy.experimental_local_results(result)[0][0])  # waits for it
        if repeat >= 3:  # after warming up
            times.append(time.perf_counter() - started)
    if index == 0:
        print(json.dumps({"parameters": parameters, "bytes": 4 * parameters, "seconds": times}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--step-ms", type=float, default=25.0, help="a step's compute on one worker, ms (default: 25)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--parameters", type=int, default=MODELS["default, vocabulary 10,000"])
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, [int(port) for port in args.ports.split(",")], args.parameters, args.repeats)
        return

    from keras_rnnlm.launch import free_ports

    results = {}
    for name, parameters in MODELS.items():
        ports = free_ports(2)
        command = [sys.executable, __file__, "--ports", ",".join(map(str, ports)), "--parameters", str(parameters),
                   "--repeats", str(args.repeats)]
        workers = [subprocess.Popen([*command, "--worker", str(index)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                   for index in range(2)]
        output = workers[0].communicate(timeout=600)[0]
        workers[1].wait(timeout=60)
        measured = json.loads(output.strip().splitlines()[-1])
        median = statistics.median(measured["seconds"])
        results[name] = {"parameters": parameters, "megabytes": round(measured["bytes"] / 1e6, 1),
                         "loopback_ms": round(1000 * median, 2),
                         "loopback_gbit_per_s": round(8 * measured["bytes"] / median / 1e9, 2)}
        print(f"{name}: {parameters:,} parameters, {measured['bytes'] / 1e6:.1f} MB a gradient; all-reduce over 2 loopback "
              f"workers: {1000 * median:.1f} ms (median of {args.repeats}), {8 * measured['bytes'] / median / 1e9:.2f} Gb/s", flush=True)

    print(f"\nmodel: a step = {args.step_ms:g} ms of compute + 2 all-reduces (clipping on), ring: 2 (N - 1) / N x bytes / bandwidth")
    model = {}
    for name, parameters in MODELS.items():
        for gbits in (10, 100):
            for workers in (2, 4, 8, 16):
                communicate = 2 * 2 * (workers - 1) / workers * 4 * parameters * 8 / (gbits * 1e9) * 1000  # ms
                efficiency = args.step_ms / (args.step_ms + communicate)
                model[f"{name}, {gbits} Gb/s, {workers} workers"] = {"communication_ms": round(communicate, 1),
                                                                        "efficiency": round(efficiency, 3)}
                print(f"  {name}, {gbits:>3} Gb/s, {workers:>2} workers: {communicate:6.1f} ms communicating, "
                      f"efficiency {efficiency:.0%}")
    print(json.dumps({"measured": results, "model": model, "step_ms": args.step_ms}))


if __name__ == "__main__":
    main()
