"""Dynamic evaluation on a bptt run's own held-out text (issue 27): its settings fitted
on the first half, scored on the second, beside the model alone and the continuous cache,
and with the two together (the cache mixed into the dynamic pass: with the cache fitted
for the model alone, and with the one fitted on the dynamic pass, as evaluate does).

A run's held-out text is its validation text, whose cache the run fitted on all of it;
so the cache here is fitted again on the first half too, and both are judged on the
second half, which neither was fitted on. For a corpus with its own validation and test
files (WikiText-2), use the CLI instead:

    python -m keras_rnnlm.evaluate --model RUN --text wiki.valid.tokens --fit-dynamic
    python -m keras_rnnlm.evaluate --model RUN --text wiki.test.tokens --dynamic --cache

Usage (from the project root):
    python benchmarks/dynamic_eval.py --model saved_models/psalms_bptt
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_rnnlm.cache import cache_scores, fit_cache  # noqa: E402
from keras_rnnlm.corpus import corpus_documents  # noqa: E402
from keras_rnnlm.data import EVALUATION_LANES, lanes  # noqa: E402
from keras_rnnlm.dynamic import dynamic_scores, fit_dynamic  # noqa: E402
from keras_rnnlm.evaluate import score_lanes  # noqa: E402
from keras_rnnlm.runs import RunFolder  # noqa: E402
from keras_rnnlm.splits import corpus_segments  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a bptt run's folder")
    args = parser.parse_args()

    config, vocabulary, _, model = RunFolder(args.model).load()
    _, held_out, _ = corpus_segments(config, corpus_documents(config.corpus.paths, config.corpus.builtin), vocabulary)
    tokens = np.asarray(held_out.tokens)
    fit_part, judged_part = tokens[: len(tokens) // 2], tokens[len(tokens) // 2:]
    fit_text, judged = (lanes([part], EVALUATION_LANES, config.data.bptt_steps) for part in (fit_part, judged_part))
    memory = config.model.memory
    print(f"{args.model}: held-out text {len(tokens):,} tokens; fitted on the first {len(fit_part):,}, "
          f"judged on the last {len(judged_part):,}")

    started = time.perf_counter()
    _, fit_without, _ = score_lanes(model, fit_text, memory)
    dynamic = fit_dynamic(model, fit_text, fit_without, memory)
    fitting = time.perf_counter() - started
    cache = fit_cache(model, fit_text, memory)
    without, with_cache, _ = cache_scores(model, judged, cache, memory)
    started = time.perf_counter()
    with_dynamic, _, both = dynamic_scores(model, judged, dynamic, memory, cache) if dynamic.learning_rate else (
        without, None, with_cache)
    scoring = time.perf_counter() - started
    joint = dynamic.cache()
    both_joint = dynamic_scores(model, judged, dynamic, memory, joint)[2] if joint else both
    print(f"dynamic evaluation fitted: {dynamic.describe()} ({fitting:.0f} s, with its cache); cache fitted: {cache.describe()}; "
          f"on the dynamic pass: {joint.describe() if joint else 'none better'}")
    print(f"judged half, perplexity: {math.exp(without):.2f} the model alone, {math.exp(with_cache):.2f} with the cache, "
          f"{math.exp(with_dynamic):.2f} with dynamic evaluation, {math.exp(both):.2f} with both ({scoring:.0f} s), "
          f"{math.exp(both_joint):.2f} with both, the cache fitted on the dynamic pass")
    print(f"judged half, nats a token: {without:.4f} the model alone, {with_cache:.4f} with the cache, "
          f"{with_dynamic:.4f} with dynamic evaluation, {both:.4f} with both, {both_joint:.4f} the cache fitted on the dynamic pass")


if __name__ == "__main__":
    main()
