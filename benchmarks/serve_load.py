"""Load on ``python -m keras_rnnlm.serve`` over loopback (issue 30): concurrent clients,
each sending requests one after another, a mix of next-word suggestions and streamed
generations, as people writing on the page would.

Starts the server in its own process on a free port, waits until it answers, then runs
``--clients`` threads of ``--requests`` requests each (a generation every
``--generate-every`` requests, next words otherwise). Reports failures, latency
percentiles per kind (a generation's until its last token, and until its first), tokens
written per second over the whole load, and the server's resident memory (VmRSS) after
warm-up, at each tenth of the load and at the end: flat means no request leaves memory behind.

Usage (from the project root):
    python benchmarks/serve_load.py --model saved_models/psalms [--clients 20] [--requests 50]
        [--generate-every 3] [--tokens 30]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

PROMPTS = ["the lord is my", "and he said unto", "o god", "blessed is the man that", "my soul", "for the", ""]


def resident_megabytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def request(port: int, path: str, body: dict) -> tuple[float, float, int]:
    """(seconds to the last byte, seconds to the first token, tokens) of one request; raises on any failure."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {response.read()[:200]!r}")
    first, tokens = None, 0
    if path == "/api/generate":
        for line in response:
            item = json.loads(line)
            if "token" in item:
                tokens += 1
                first = first or time.perf_counter() - started
            elif not item.get("done"):
                raise RuntimeError(f"unexpected line {item}")
    else:
        json.loads(response.read())["words"]
    connection.close()
    return time.perf_counter() - started, first or 0.0, tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="run folder to serve")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=50, help="per client")
    parser.add_argument("--generate-every", type=int, default=3, help="one request in this many is a generation")
    parser.add_argument("--tokens", type=int, default=30, help="tokens per generation")
    args = parser.parse_args()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "keras_rnnlm.serve", "--model", args.model, "--port", str(port)])
    try:
        for _ in range(1200):
            try:
                request(port, "/api/next_words", {"text": "", "k": 5})
                break
            except OSError:
                time.sleep(0.1)
        for prompt in PROMPTS:  # warm-up: every path traced once
            request(port, "/api/generate", {"text": prompt, "num_tokens": 3})
        memory = [("after warm-up", resident_megabytes(server.pid))]
        latencies = {"next_words": [], "generate": [], "first token": []}
        failures, tokens, lock, done = [], [0], threading.Lock(), [0]
        total = args.clients * args.requests

        def client(number: int) -> None:
            chooser = random.Random(number)
            for index in range(args.requests):
                prompt = chooser.choice(PROMPTS)
                try:
                    if index % args.generate_every == 0:
                        body = {"text": prompt, "num_tokens": args.tokens, "temperature": 0.8, "seed": chooser.randrange(1000)}
                        seconds, first, written = request(port, "/api/generate", body)
                        with lock:
                            latencies["generate"].append(seconds)
                            latencies["first token"].append(first)
                            tokens[0] += written
                    else:
                        seconds, _, _ = request(port, "/api/next_words", {"text": prompt, "k": 8})
                        with lock:
                            latencies["next_words"].append(seconds)
                except Exception as error:  # counted and shown: the benchmark's point is that none happen
                    with lock:
                        failures.append(repr(error))
                with lock:
                    done[0] += 1
                    if done[0] % (total // 10) == 0:
                        memory.append((f"{done[0]} requests", resident_megabytes(server.pid)))

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(number,)) for number in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        memory.append(("end", resident_megabytes(server.pid)))
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(f"{args.clients} clients x {args.requests} requests ({total:,}), one in {args.generate_every} a generation of "
          f"{args.tokens} tokens; {args.model}")
    print(f"failed: {len(failures)}" + (f" (first: {failures[0]})" if failures else ""))
    print(f"wall time {seconds:.1f} s; {total / seconds:.1f} requests/s; {tokens[0]:,} tokens generated, "
          f"{tokens[0] / seconds:.0f} tokens/s")
    for kind, values in latencies.items():
        if values:
            cuts = statistics.quantiles(values, n=100)
            print(f"{kind:>11}: {len(values)} requests, p50 {cuts[49] * 1000:.0f} ms, p95 {cuts[94] * 1000:.0f} ms, "
                  f"max {max(values) * 1000:.0f} ms")
    print("server memory (VmRSS): " + ", ".join(f"{when} {megabytes:.0f} MB" for when, megabytes in memory))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
