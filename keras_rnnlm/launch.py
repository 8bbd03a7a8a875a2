"""Trying multi-worker training on one machine: ``python -m keras_rnnlm.launch``.

Starts N ``python -m keras_rnnlm.train`` processes, each with a ``TF_CONFIG`` naming all
of them on free loopback ports and its own index (worker 0, the chief, writes the run
folder), streams their output with a ``[worker i]`` prefix, and stops them all as soon
as one fails, so that no worker waits for ever for a peer that is gone. On a cluster,
whatever starts the processes sets ``TF_CONFIG`` instead (:mod:`keras_rnnlm.multiworker`).

Example:
    python -m keras_rnnlm.launch --workers 2 -- --config configs/tiny.toml --run-name tiny2
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m keras_rnnlm.launch: no TensorFlow needed
    import sys

    from keras_rnnlm import cli

    sys.exit(cli.main("launch"))

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from keras_rnnlm.errors import RnnlmError

STOP_GRACE_SECONDS = 5  # after SIGTERM, before SIGKILL


def launch(workers: int, train_arguments: Sequence[str]) -> int:
    """Runs ``workers`` training processes on this machine as one cluster.

    Args:
        workers: How many.
        train_arguments: The arguments of ``python -m keras_rnnlm.train``, the same for all.

    Returns:
        0 when every worker succeeded.

    Raises:
        RnnlmError: A worker failed (the others are stopped); names it and its exit status.
    """
    ports = free_ports(workers)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    processes = []
    for index in range(workers):
        environment = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "keras_rnnlm.train", *train_arguments], env=environment,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        ))
    print(f"launch: {workers} workers on ports {', '.join(map(str, ports))}; worker 0 writes the run folder", file=sys.stderr, flush=True)
    readers = [threading.Thread(target=_forward, args=(process, index), daemon=True) for index, process in enumerate(processes)]
    for reader in readers:
        reader.start()
    try:
        failed = _wait_for_all_or_a_failure(processes)
    except KeyboardInterrupt:
        _stop(processes)
        raise
    if failed is not None:
        _stop(processes)
    for reader in readers:
        reader.join(timeout=5)
    if failed is not None:
        code = processes[failed].returncode
        raise RnnlmError(f"worker {failed} failed (exit status {code}; its output is above), so the other workers were stopped")
    return 0


def free_ports(count: int) -> list[int]:
    """``count`` TCP ports free on the loopback interface now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _wait_for_all_or_a_failure(processes: list[subprocess.Popen]) -> int | None:
    """Waits until every process has ended (None) or one has failed (its index)."""
    while True:
        codes = [process.poll() for process in processes]
        for index, code in enumerate(codes):
            if code not in (None, 0):
                return index
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.1)


def _stop(processes: list[subprocess.Popen]) -> None:
    """Ends every process still running: SIGTERM, then SIGKILL after a grace period."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _forward(process: subprocess.Popen, index: int) -> None:
    for line in iter(process.stdout.readline, b""):
        sys.stderr.write(f"[worker {index}] {line.decode('utf-8', errors='replace')}")
        sys.stderr.flush()


def main(args) -> int:
    """``python -m keras_rnnlm.launch``, its arguments checked (:func:`keras_rnnlm.arguments.launch`)."""
    return launch(args.workers, args.train_arguments)
