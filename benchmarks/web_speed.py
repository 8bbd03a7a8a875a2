"""The static web export (``export --format web``, issue 30): the folder's size, and how
fast the page's JavaScript model writes, one text at a time, in Chromium.

Exports ``--model`` into a temporary folder, serves it on loopback, opens it in Chromium
(Playwright, Debian's chromium), and times the page's model writing ``--tokens`` tokens
greedily after a prompt, ``--repeats`` times (the median is reported). As a reference in
the same run, the same run's Python generator (``Generator.generate``, TensorFlow, batch 1).

Usage (from the project root; needs pip install ".[browser]" and apt-get install chromium):
    python benchmarks/web_speed.py --model saved_models/psalms [--tokens 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TIMING = """async ([tokens, repeats]) => {
  const [manifest, weights] = await Promise.all([fetch("model.json").then((r) => r.json()), fetch("weights.bin").then((r) => r.arrayBuffer())]);
  const model = new RNNLM.Model(manifest, weights);
  const seconds = [];
  for (let repeat = 0; repeat <= repeats; repeat++) {  // the first is a warm-up
    const started = performance.now();
    let written = 0;
    for (const id of model.tokens("the", { numTokens: tokens, temperature: 0, maxLines: 0 })) written++;
    if (repeat) seconds.push((performance.now() - started) / 1000 / written * tokens);
  }
  return seconds;
}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from keras_rnnlm.generate import Generator
    from keras_rnnlm.sampling import Sampling
    from keras_rnnlm.web import export_web

    folder = export_web(args.model, Path(tempfile.mkdtemp()) / "web")
    sizes = {path.name: path.stat().st_size for path in folder.iterdir() if not path.name.startswith(".")}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=folder,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            browser_seconds = page.evaluate(TIMING, [args.tokens, args.repeats])
            version = browser.version
            browser.close()
    finally:
        server.terminate()
        shutil.rmtree(folder.parent, ignore_errors=True)

    generator = Generator.from_run(args.model)
    python_seconds = []
    for repeat in range(args.repeats + 1):
        started = time.perf_counter()
        generator.generate(["the"], args.tokens, Sampling(temperature=0.0), max_lines=0)
        if repeat:
            python_seconds.append(time.perf_counter() - started)

    browser_rate = args.tokens / statistics.median(browser_seconds)
    python_rate = args.tokens / statistics.median(python_seconds)
    print(f"{args.model}: folder {sum(sizes.values()) / 1e6:.2f} MB (" + ", ".join(f"{name} {size / 1e6:.2f} MB" for name, size
                                                                       in sorted(sizes.items(), key=lambda item: -item[1])) + ")")
    print(f"Chromium {version}, rnnlm.js: {browser_rate:.0f} tokens/s at batch 1 (median of {args.repeats}, {args.tokens} greedy tokens)")
    print(f"Python, Generator.generate (TensorFlow), batch 1: {python_rate:.0f} tokens/s; the page runs at "
          f"{browser_rate / python_rate:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
