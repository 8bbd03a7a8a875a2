"""Makes docs/page.png, the writing page the README shows: serves a run with
``python -m keras_rnnlm.serve``, writes a few lines in Chromium with Playwright and takes
a picture.

Usage (from the project root; needs pip install ".[serve,browser]" and apt-get install chromium):
    python docs/screenshot.py --model saved_models/psalms [--prompt "the lord is my"] [--out docs/page.png]
"""

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

from playwright.sync_api import expect, sync_playwright


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompt", default="the lord is my")
    parser.add_argument("--out", default="docs/page.png")
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "keras_rnnlm.serve", "--model", args.model, "--port", str(port)])
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.goto(f"http://127.0.0.1:{port}/")
            expect(page.locator("#suggestions button").first).to_be_visible(timeout=60_000)
            page.fill("#text", args.prompt)
            page.fill("#temperature", "0.7")
            page.fill("#length", "60")
            page.fill("#seed", "3")
            page.click("#continue")
            expect(page.locator("#continue")).to_be_enabled(timeout=60_000)
            page.locator("#text").dispatch_event("input")
            page.wait_for_timeout(1000)
            page.screenshot(path=args.out)
            browser.close()
    finally:
        server.terminate()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
