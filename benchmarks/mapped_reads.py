"""Why prepared shards are read with ``pread``, not through a memory map.

Reads random 6-token windows (12 bytes) from a large file, as a training batch reads its
windows from a prepared corpus, two ways: through ``mmap`` (NumPy indexing a mapped
array) and with ``os.pread``. Prints, for each, the growth of the process' resident
memory per window read (``RssFile`` in /proc/self/status: page-cache pages mapped into
the process) and the time to read 256 windows. The file should be larger than what the
reads touch, e.g. a prepared 2 GB corpus' shard or the synthetic text itself.

Usage:
    python benchmarks/mapped_reads.py FILE [--windows 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import time

import numpy as np


def resident_file_pages_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssFile:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file")
    parser.add_argument("--windows", type=int, default=1000, help="random windows read per measurement (default: 1,000)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    descriptor = os.open(args.file, os.O_RDONLY)
    tokens = os.fstat(descriptor).st_size // 2
    mapped = mmap.mmap(descriptor, 0, access=mmap.ACCESS_READ)
    mapped.madvise(mmap.MADV_RANDOM)
    array = np.frombuffer(mapped, np.uint16, count=tokens)
    rng = np.random.default_rng(0)
    growth = {"mmap": [], "pread": []}
    batch_ms = {"mmap": [], "pread": []}
    for _ in range(args.repeats):
        mapped.madvise(mmap.MADV_DONTNEED)  # start with nothing mapped
        starts = rng.integers(0, tokens - 6, args.windows)
        before = resident_file_pages_mb()
        started = time.perf_counter()
        array[starts[:, np.newaxis] + np.arange(6)].astype(np.int32)
        batch_ms["mmap"].append(1000 * (time.perf_counter() - started) * 256 / args.windows)
        growth["mmap"].append((resident_file_pages_mb() - before) * 1024 / args.windows)

        starts = rng.integers(0, tokens - 6, args.windows)
        before = resident_file_pages_mb()
        started = time.perf_counter()
        data = b"".join([os.pread(descriptor, 12, 2 * start) for start in starts.tolist()])
        np.frombuffer(data, np.uint16).astype(np.int32)
        batch_ms["pread"].append(1000 * (time.perf_counter() - started) * 256 / args.windows)
        growth["pread"].append((resident_file_pages_mb() - before) * 1024 / args.windows)
    print(f"file: {args.file}, {os.fstat(descriptor).st_size / 1e9:.2f} GB; kernel {os.uname().release}")
    for way in ("mmap", "pread"):
        print(f"{way:>5}: resident memory +{statistics.median(growth[way]):,.1f} KB a window read, "
              f"{statistics.median(batch_ms[way]):.3f} ms for 256 windows (medians of {args.repeats})")


if __name__ == "__main__":
    main()
