"""python -m keras_rnnlm.serve: the JSON API behind the writing page, and Generator.stream
that it writes with. The page itself, in a browser: tests/test_browser.py."""

import asyncio
import http.client
import json
import threading
import time

import numpy as np
import pytest
import uvicorn
from starlette.testclient import TestClient

from keras_rnnlm import cli, serve
from keras_rnnlm.generate import Generator
from keras_rnnlm.sampling import Sampling

PROMPT = "cause baby now we got"


SETTINGS = [(Sampling(0.0), 0, 1), (Sampling(0.9, top_k=3), 2, 3), (Sampling(2.0, top_p=0.8), 5, 1)]


@pytest.mark.parametrize("run", ["bptt_run", pytest.param("song_run", marks=pytest.mark.slow),
                                 pytest.param("names_run", marks=pytest.mark.slow)])
def test_stream_writes_token_by_token_what_generate_writes(run, request):
    generator = Generator.from_run(request.getfixturevalue(run))
    for sampling, seed, samples in SETTINGS:
        prompts = ["an" if run == "names_run" else PROMPT] * samples
        whole = generator.generate(prompts, 30, sampling, seed=seed)
        steps = list(generator.stream(prompts, 30, sampling, seed=seed))
        assert 0 < len(steps) <= 30
        streamed = np.stack(steps, axis=1)
        assert [generator.text_from_ids(prompt, ids) for prompt, ids in zip(prompts, streamed)] == whole
        if run == "names_run":  # a name ends at its line break: the stream ends when every sample has
            assert len(steps) < 30 and all((row == 2).any() for row in streamed)


@pytest.fixture(scope="module")
def client(song_run):
    with TestClient(serve.create_app(song_run)) as client:
        yield client


def streamed(response) -> list[dict]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


def test_generate_streams_what_the_command_line_writes(client, song_run):
    generator = Generator.from_run(song_run)
    items = streamed(client.post("/api/generate", json={"text": PROMPT, "num_tokens": 12, "temperature": 1.5, "seed": 7,
                                                        "samples": 2}))
    assert items[-1]["done"] and items[-1]["tokens"] == 24
    for sample, text in enumerate(generator.generate([PROMPT] * 2, 12, Sampling(1.5), seed=7)):
        tokens = [item["token"] for item in items[:-1] if item["sample"] == sample]
        assert generator.tokenizer.text_from_tokens(generator.tokenizer.tokens_from_text(PROMPT) + tokens) == text


def test_next_words_and_runs(client, song_run):
    words = client.post("/api/next_words", json={"text": PROMPT, "k": 3}).json()["words"]
    assert [word["word"] for word in words][0] == "bad"
    assert [(word["word"], pytest.approx(word["probability"])) for word in words] == Generator.from_run(song_run).next_words(PROMPT, 3)
    listed = client.get("/api/runs").json()
    assert listed["default"] == song_run.name
    [run] = [run for run in listed["runs"] if run["name"] == song_run.name]
    assert run["level"] == "word" and run["val_perplexity"] > 0 and run["tokenizer"]["lowercase"] is True
    page = client.get("/")
    assert page.status_code == 200 and '<script src="backend.js">' in page.text
    assert client.get("/backend.js").status_code == client.get("/rnnlm.js").status_code == 200


@pytest.mark.parametrize("path, body, status, message", [
    ("/api/generate", {"text": PROMPT, "temperature": -1}, 400, "temperature must be above 0"),
    ("/api/generate", {"strategy": "top_p", "top_p": 1.5}, 400, "top-p must be in (0, 1]"),
    ("/api/generate", {"strategy": "beam"}, 400, "strategy 'beam' is not one of"),
    ("/api/generate", {"num_tokens": 0}, 400, "the number of words must be between 1 and"),
    ("/api/generate", {"num_tokens": 2001}, 400, "num_tokens must be at most 2,000 a request"),
    ("/api/generate", {"samples": 9}, 400, "samples must be between 1 and 8"),
    ("/api/generate", {"seed": -1}, 400, "the seed must be between 0 and"),
    ("/api/generate", {"num_tokens": "5"}, 400, 'num_tokens must be a whole number, got "5"'),
    ("/api/generate", {"temperature": True}, 400, "temperature must be a number"),
    ("/api/generate", {"prompt": "x"}, 400, "unknown field 'prompt'; the fields are text,"),
    ("/api/generate", [1, 2], 400, "the request body must be a JSON object"),
    ("/api/next_words", {"k": 0}, 400, "k must be between 1 and 50"),
    ("/api/next_words", {"text": "x" * 20_001}, 400, "the text is 20,001 characters; at most 20,000"),
    ("/api/next_words", {"run": "nope"}, 404, "no trained run named 'nope'"),
    ("/api/next_words", {"text": "x" * 70_000}, 413, "the request is over 64 KB"),
])
def test_a_bad_request_gets_one_sentence_naming_the_problem(client, path, body, status, message):
    response = client.post(path, json=body)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert client.post(path, content=b"{not json").json()["error"].startswith("the request body is not JSON")


def test_generations_beyond_the_running_and_waiting_are_refused(monkeypatch):
    monkeypatch.setattr(serve, "MAX_RUNNING", 1)
    monkeypatch.setattr(serve, "MAX_WAITING", 1)

    async def scenario():
        turns = serve.Turns()
        await turns.__aenter__()  # running
        waiting = asyncio.ensure_future(turns.__aenter__())
        await asyncio.sleep(0)
        assert turns.holders == 2
        with pytest.raises(serve.HTTPError, match="2 generations are running or waiting"):
            turns.check()
        await turns.__aexit__()
        await waiting  # its turn came
        await turns.__aexit__()
        assert turns.holders == 0
        turns.check()

    asyncio.run(scenario())


def test_a_client_that_leaves_mid_stream_frees_its_generation(song_run, unused_port):
    server = uvicorn.Server(uvicorn.Config(serve.create_app(song_run), host="127.0.0.1", port=unused_port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        connection = http.client.HTTPConnection("127.0.0.1", unused_port, timeout=60)
        connection.request("POST", "/api/generate", json.dumps({"text": PROMPT, "num_tokens": 2000, "samples": 8}))
        response = connection.getresponse()
        assert json.loads(response.readline())["sample"] == 0
        connection.close()  # the page's Stop, a closed tab
        deadline = time.time() + 30
        while (status := _get_json(unused_port, "/api/runs"))["generations"] and time.time() < deadline:
            time.sleep(0.05)
        assert status["generations"] == 0
        assert status["tokens_written"] < 8 * 2000
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _get_json(port, path):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", path)
    return json.loads(connection.getresponse().read())


@pytest.fixture
def unused_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow  # starts the command in a process of its own
def test_serve_refuses_a_busy_port_and_warns_before_listening_on_every_network(song_run, capsys, unused_port):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", unused_port))
        taken.listen()
        assert cli.main("serve", ["--model", str(song_run), "--port", str(unused_port)]) == 2
    assert f"cannot listen on 127.0.0.1:{unused_port}" in capsys.readouterr().err
    assert cli.main("serve", ["--model", str(song_run), "--port", "70000"]) == 2
    assert "--port must be between 1 and 65535" in capsys.readouterr().err
    import subprocess
    import sys

    everyone = subprocess.Popen([sys.executable, "-m", "keras_rnnlm.serve", "--model", str(song_run), "--host", "0.0.0.0",
                                 "--port", str(unused_port)], stderr=subprocess.PIPE, text=True)
    try:
        lines = [everyone.stderr.readline(), everyone.stderr.readline()]
    finally:
        everyone.terminate()
        everyone.wait(timeout=30)
    assert lines[0].startswith("warning: listening on 0.0.0.0: anyone who can reach this machine")
    assert lines[1].startswith(f"writing with {song_run} at http://0.0.0.0:{unused_port}")
