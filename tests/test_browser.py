"""The writing page in a real browser: Playwright drives Debian's Chromium (Playwright's own
browser download is not reachable here). The same checks run against the page
``python -m keras_rnnlm.serve`` serves and the static folder ``export --format web``
writes, served by ``python -m http.server``.

Locally: ``apt-get install chromium`` and ``pip install ".[browser]"``, then
``python -m pytest -m slow tests/test_browser.py``. Without them the tests are skipped,
except where ``KERAS_RNNLM_BROWSER_TESTS`` is set (CI sets it): there they fail.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from keras_rnnlm.generate import Generator
from keras_rnnlm.sampling import Sampling
from keras_rnnlm.web import export_web

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    expect = sync_playwright = None

PROMPT = "cause baby now we got"  # as the tokenizer writes it back: the page's text equals the command line's


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def started(command: list[str], url: str, cwd=None) -> subprocess.Popen:
    server = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        try:
            urllib.request.urlopen(url, timeout=1)
            return server
        except OSError:
            if server.poll() is not None:
                raise AssertionError(f"{command} ended: {server.stderr.read()}")
            time.sleep(0.1)
    server.kill()
    raise AssertionError(f"{url} did not answer")


@pytest.fixture(scope="module", params=["served", "static"])
def site(request, song_run, tmp_path_factory):
    """The page's address: keras_rnnlm.serve on the song run, or its static export."""
    port = free_port()
    if request.param == "served":
        command = [sys.executable, "-m", "keras_rnnlm.serve", "--model", str(song_run), "--port", str(port)]
        server = started(command, f"http://127.0.0.1:{port}/api/runs")
    else:
        folder = export_web(song_run, tmp_path_factory.mktemp("site") / "web")
        server = started([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], f"http://127.0.0.1:{port}/",
                         cwd=folder)
    yield request.param, f"http://127.0.0.1:{port}/"
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and sync_playwright) and not os.environ.get("KERAS_RNNLM_BROWSER_TESTS"):
        pytest.skip("needs Chromium (apt-get install chromium) and Playwright (pip install \".[browser]\")")
    with sync_playwright() as playwright:
        # The flags keep Chromium from reaching for the network, which this machine refuses.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, site):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(site[1])
    expect(page.locator("#suggestions button").first).to_be_visible(timeout=60_000)  # the model answered
    yield page
    page.close()
    assert not errors


def write(page, prompt: str, **settings) -> str:
    page.fill("#text", prompt)
    for name, value in settings.items():
        if name == "strategy":
            page.select_option("#strategy", value)
        else:
            page.fill(f"#{name}", str(value))
    page.click("#continue")
    expect(page.locator("#continue")).to_be_enabled(timeout=60_000)
    return page.input_value("#text")


def test_continue_writes_what_the_command_line_writes(page, site, song_run):
    generator = Generator.from_run(song_run)
    greedy = write(page, PROMPT, strategy="greedy", length=20)
    assert greedy == generator.generate([PROMPT], 20, Sampling(temperature=0.0))[0]
    assert page.locator("#error").inner_text() == ""
    assert "20 tokens" in page.locator("#status").inner_text()
    if site[0] == "served":  # the page in the browser draws from its own generator: only greedy text matches there
        sampled = write(page, PROMPT, strategy="temperature", temperature=1.5, length=30, seed=7)
        assert sampled == generator.generate([PROMPT], 30, Sampling(temperature=1.5), seed=7)[0]


def test_a_suggestion_is_inserted_with_a_click(page):
    page.fill("#text", PROMPT)
    page.locator("#text").dispatch_event("input")
    first = page.locator("#suggestions button").first
    expect(first).to_have_attribute("data-word", "bad", timeout=30_000)  # the song goes on "... we got bad blood"
    first.click()
    assert page.input_value("#text") == PROMPT + " bad"
    expect(page.locator("#suggestions button").first).to_have_attribute("data-word", "blood", timeout=30_000)


def test_a_bad_setting_shows_its_message(page):
    write(page, PROMPT, strategy="temperature", temperature=-1)
    expect(page.locator("#error")).to_contain_text("temperature must be above 0")
    assert page.input_value("#text") == PROMPT
    write(page, PROMPT, strategy="top_p", temperature=1, top_p=1.5)
    expect(page.locator("#error")).to_contain_text("top-p must be in (0, 1]")


def test_stop_ends_a_long_generation(page):
    page.fill("#text", PROMPT)
    page.select_option("#strategy", "temperature")
    page.fill("#length", "2000")
    page.click("#continue")
    # Clicked from inside the page the moment text appears: the served page writes 2,000
    # tokens in about a second, faster than a click from here would land.
    page.evaluate(f"""() => new Promise((done) => {{
        const poll = setInterval(() => {{
            if (document.getElementById("text").value.length > {len(PROMPT) + 20}) {{
                document.getElementById("stop").click();
                clearInterval(poll);
                done();
            }}
        }}, 1);
    }})""")
    expect(page.locator("#continue")).to_be_enabled(timeout=30_000)
    expect(page.locator("#status")).to_contain_text("stopped")
    written = int(page.locator("#status").inner_text().split()[0])
    assert 0 < written < 2000


def test_several_samples_are_offered_to_choose_from(page):
    write(page, PROMPT, strategy="temperature", temperature=1, length=10, samples=3)
    choices = page.locator("#alternatives div")
    expect(choices).to_have_count(3)
    second = choices.nth(1).locator("span").inner_text()
    assert second.startswith(PROMPT) and len(second) > len(PROMPT)
    choices.nth(1).locator("button").click()
    assert page.input_value("#text") == second


PARITY = """async ([prompts, tokens]) => {
  const [manifest, weights] = await Promise.all([fetch("model.json").then((r) => r.json()), fetch("weights.bin").then((r) => r.arrayBuffer())]);
  const model = new RNNLM.Model(manifest, weights);
  return prompts.map((prompt) => {
    const greedy = Array.from(model.tokens(prompt, { numTokens: tokens, temperature: 0 }));
    return { probabilities: Array.from(model.probabilities(model.start(model.idsFromText(prompt)))), text: model.text(prompt, greedy) };
  });
}"""


@pytest.mark.parametrize("run, prompts", [
    ("song_run", ["cause baby now we got", "", "You KNOW, it used zebra"]),  # word level, windows
    ("names_run", ["an", "", "Hann"]),  # character level, windows, line mode
    ("bptt_run", ["the cat sat on the", "", "The HAT, the mat"]),  # word level, bptt, tied embeddings
    ("char_bptt_run", ["an", "", "Hann"]),  # character level, bptt, two GRU layers, layer normalization
])
def test_the_browser_predicts_and_writes_what_keras_does(browser, run, prompts, request, tmp_path):
    import numpy as np

    run = request.getfixturevalue(run)
    folder = export_web(run, tmp_path / "web")
    port = free_port()
    server = started([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], f"http://127.0.0.1:{port}/",
                     cwd=folder)
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        answers = page.evaluate(PARITY, [prompts, 50])
        page.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    generator = Generator.from_run(run)
    for prompt, answer in zip(prompts, answers):
        probabilities = generator.model.predict(generator.windows_from_prompts([prompt]), verbose=0)
        probabilities = probabilities[0] if generator.window_size else probabilities[0, -1]
        np.testing.assert_allclose(answer["probabilities"], probabilities, atol=1e-4, rtol=0)
        assert answer["text"] == generator.generate([prompt], 50, Sampling(temperature=0.0))[0]


def test_the_served_page_switches_between_runs(page, site, names_run):
    if site[0] == "static":
        pytest.skip("a static page holds one model")
    option = page.locator(f'#run option[value="{names_run.name}"]')  # by name: another run's label may say "names" too
    expect(option).to_have_count(1)
    assert "perplexity" in option.inner_text()
    page.select_option("#run", names_run.name)
    expect(page.locator("#model")).to_contain_text("char level")
    page.fill("#text", "ann")
    page.locator("#text").dispatch_event("input")
    expect(page.locator("#suggestions button").first).to_have_attribute("data-word", "a", timeout=30_000)  # anna
    assert write(page, "ann", strategy="greedy", length=10) == Generator.from_run(names_run).generate(["ann"], 10, Sampling(0.0))[0]
