"""Large corpora: prepare throughput, and training from memory-mapped shards against
training from a small corpus and from text.

Writes two synthetic corpora (benchmarks/synthetic.py: Zipf-distributed words from a
10,000-word vocabulary), about 2 GB and 20 MB, and measures:

1. ``python -m keras_rnnlm.prepare`` on each: wall time, MB/s (target: >= 25 MB/s on
   2 cores) and peak resident memory; then that the small corpus' prepared ids equal
   the ids training from its text uses (the vocabulary, and every split's ids and
   segment ends).
2. ``python -m keras_rnnlm.train --data DIR`` on each, ``--steps`` steps of the default
   model: the time from launching the command to its "first training step done" line
   (target: under 10 s on the 2 GB corpus), and the process' peak resident memory
   (target: <= 1.5 GB, and within 10% of the 20 MB corpus'). Then the same after a
   ``kill -9`` mid-epoch: the restarted command resumes from its backup.
3. Training speed on the 20 MB corpus from shards and from its text, in one process,
   alternating: the median time of a step after the first 20 (target: within 5%).

The corpora keep 0.1% for validation (``corpus.valid_fraction = 0.001``), so that the
validation pass at an epoch's end stays short at 2 GB. ``--with-text`` also times
training from the 2 GB text (tokenized at every start), for comparison.

Usage:
    python benchmarks/large_corpus.py [--workdir /tmp/keras_rnnlm_large] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import write_corpus  # noqa: E402

SETTINGS = ["--set", "corpus.valid_fraction=0.001"]
TRAIN_SETTINGS = [*SETTINGS, "--set", "train.sample_length=0", "--set", "train.tensorboard=false", "--epochs", "1"]
# Runs the command as its only child, then prints the child's peak resident set in bytes.
MEASURE = (
    "import resource, subprocess, sys; "
    "code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); sys.exit(code)"
)
FIRST_STEP = "first training step done"


def corpus(workdir: Path, tokens: int) -> Path:
    """The synthetic corpus of ``tokens`` words, written unless already there."""
    path = workdir / f"synthetic_{tokens}.txt"
    done = path.with_suffix(".done")
    if not done.is_file():
        write_corpus(path, tokens)
        done.write_text("")
    return path


def measured(command: list[str], watch_for: str | None = None, kill_after: Path | None = None) -> dict:
    """Runs ``command`` under :data:`MEASURE`: its wall time, peak RSS, the seconds from
    launch to the first stderr line holding ``watch_for``, and its stderr. With
    ``kill_after``, kills the command (SIGKILL) once that file exists."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", MEASURE, *command], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen, lines = None, []
    for line in process.stderr:
        lines.append(line)
        if seen is None and watch_for and watch_for in line:
            seen = time.perf_counter() - started
            if kill_after is not None:
                while not kill_after.is_file():
                    time.sleep(0.05)
                os.killpg(process.pid, signal.SIGKILL)
                break
    process.wait()
    out = process.stdout.read()
    if kill_after is None and process.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{''.join(lines[-30:])}")
    return {"seconds": time.perf_counter() - started, "peak_rss": int(out.split()[-1]) if out.split() else None,
            "first_step": seen, "log": "".join(lines)}


def prepare(text: Path, out: Path) -> dict:
    result = measured([sys.executable, "-m", "keras_rnnlm.prepare", "--corpus", str(text), "--out", str(out), "--overwrite", *SETTINGS])
    result["megabytes"] = text.stat().st_size / 1e6
    return result


def same_ids_as_text(text: Path, prepared: Path) -> bool:
    import numpy as np

    from keras_rnnlm.config import load_config
    from keras_rnnlm.corpus import find_documents
    from keras_rnnlm.shards import PreparedCorpus
    from keras_rnnlm.splits import corpus_segments

    config = load_config(None, ["corpus.valid_fraction=0.001"])
    train, valid, vocabulary = corpus_segments(config, find_documents([text]))
    corpus = PreparedCorpus(prepared)
    same = corpus.vocabulary() == vocabulary
    for split, expected in (("train", train), ("valid", valid)):
        segments = corpus.segments(split)
        expected_ids = np.asarray(expected.tokens)
        same &= segments.num_tokens == len(expected_ids)
        same &= all(np.array_equal(chunk, expected_ids[start : start + len(chunk)])
                     for start, chunk in zip(range(0, len(expected_ids), 1 << 22), segments.tokens.chunks(1 << 22), strict=False))
        same &= np.array_equal(np.asarray(segments.ends), np.cumsum([len(part) for part in expected]))
    return bool(same)


def train_command(data: list[str], runs: Path, name: str, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "keras_rnnlm.train", *data, "--output-dir", str(runs), "--run-name", name,
            *TRAIN_SETTINGS, "--set", f"train.steps_per_epoch={steps}", *extra]


def step_times(workdir: Path, text: Path, prepared: Path, steps: int, repeats: int) -> dict:
    """Median step time (after the first 20) of training from shards and from text,
    alternating in this process."""
    import keras

    from keras_rnnlm.config import load_config
    from keras_rnnlm.train import train

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

    medians = {"shards": [], "text": []}
    for repeat in range(repeats):
        for way, path in (("shards", prepared), ("text", text)):
            config = load_config(None, ["corpus.valid_fraction=0.001", "train.sample_length=0", "train.tensorboard=false",
                                        "train.epochs=1", f"train.steps_per_epoch={steps}", f"corpus.paths=['{path}']"])
            timer = StepTimer()
            train(config, workdir / "speed" / f"{way}-{repeat}", overwrite=True, extra_callbacks=[timer], verbose=0)
            gaps = [later - earlier for earlier, later in zip(timer.times[20:], timer.times[21:], strict=False)]
            medians[way].append(statistics.median(gaps))
            print(f"  speed, {way}, run {repeat + 1}: {1000 * medians[way][-1]:.2f} ms a step", flush=True)
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/keras_rnnlm_large")
    parser.add_argument("--tokens", type=int, nargs=2, default=[2_900_000, 290_000_000], metavar=("SMALL", "LARGE"),
                        help="words in the two corpora (default: about 20 MB and 2 GB)")
    parser.add_argument("--steps", type=int, default=300, help="training steps a run (default: 300)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement (default: 3)")
    parser.add_argument("--with-text", action="store_true", help="also time training from the large text")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    mib = 2**20
    results = {"command": " ".join(sys.argv), "steps": args.steps}

    texts = {size: corpus(workdir, tokens) for size, tokens in zip(("small", "large"), args.tokens, strict=True)}
    prepared = {size: workdir / f"prepared_{size}" for size in texts}
    for size, text in texts.items():
        result = prepare(text, prepared[size])
        results[f"prepare_{size}"] = {"megabytes": round(result["megabytes"], 1), "seconds": round(result["seconds"], 1),
                                      "mb_per_s": round(result["megabytes"] / result["seconds"], 1),
                                      "peak_rss_mib": round(result["peak_rss"] / mib)}
        print(f"prepare {size}: {result['megabytes']:,.1f} MB in {result['seconds']:,.1f} s "
              f"({result['megabytes'] / result['seconds']:.1f} MB/s), peak RSS {result['peak_rss'] / mib:,.0f} MiB", flush=True)
    results["same_ids_as_text"] = same_ids_as_text(texts["small"], prepared["small"])
    print(f"small corpus: prepared ids equal training-from-text ids: {results['same_ids_as_text']}", flush=True)

    runs = workdir / "runs"
    starts = {size: [] for size in texts}
    peaks = {size: [] for size in texts}
    for repeat in range(args.repeats):
        for size in texts:
            result = measured(train_command(["--data", str(prepared[size])], runs, size, args.steps, "--overwrite"), FIRST_STEP)
            starts[size].append(result["first_step"])
            peaks[size].append(result["peak_rss"])
            print(f"train --data, {size}, run {repeat + 1}: first step after {result['first_step']:.1f} s, "
                  f"peak RSS {result['peak_rss'] / mib:,.0f} MiB, {result['seconds']:.0f} s in all", flush=True)
    for size in texts:
        results[f"train_{size}"] = {"first_step_s": round(statistics.median(starts[size]), 2),
                                    "peak_rss_mib": round(statistics.median(peaks[size]) / mib),
                                    "first_step_runs": [round(value, 2) for value in starts[size]],
                                    "peak_rss_runs_mib": [round(value / mib) for value in peaks[size]]}
    results["peak_rss_ratio"] = round(statistics.median(peaks["large"]) / statistics.median(peaks["small"]), 3)

    resumes = []
    for repeat in range(args.repeats):  # killed after its first backup (step 20), then run again
        command = train_command(["--data", str(prepared["large"])], runs, "resumed", args.steps,
                                "--set", "train.backup_every_steps=20")
        measured([*command, "--overwrite"], FIRST_STEP, kill_after=runs / "resumed" / "backup" / "latest.npz")
        result = measured(command, FIRST_STEP)
        assert "resuming at epoch 1, step" in result["log"], result["log"][-2000:]
        resumes.append((result["first_step"], result["peak_rss"]))
        print(f"resume, large, run {repeat + 1}: first step after {result['first_step']:.1f} s, "
              f"peak RSS {result['peak_rss'] / mib:,.0f} MiB", flush=True)
    results["resume_large"] = {"first_step_s": round(statistics.median(value for value, _ in resumes), 2),
                               "peak_rss_mib": round(statistics.median(peak for _, peak in resumes) / mib)}

    if args.with_text:
        result = measured(train_command(["--corpus", str(texts["large"])], runs, "large-text", args.steps, "--overwrite"), FIRST_STEP)
        results["train_large_from_text"] = {"first_step_s": round(result["first_step"], 1), "peak_rss_mib": round(result["peak_rss"] / mib)}
        print(f"train --corpus, large: first step after {result['first_step']:.1f} s, peak RSS {result['peak_rss'] / mib:,.0f} MiB", flush=True)

    medians = step_times(workdir, texts["small"], prepared["small"], args.steps, args.repeats)
    results["step_ms"] = {way: round(1000 * statistics.median(values), 2) for way, values in medians.items()}
    results["step_ratio_shards_to_text"] = round(statistics.median(medians["shards"]) / statistics.median(medians["text"]), 3)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
