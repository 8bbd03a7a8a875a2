"""A local web page to write with a trained model: ``python -m keras_rnnlm.serve``.

The page (``keras_rnnlm/page/index.html``, the same one ``export --format web`` writes)
talks to a small JSON API; the model runs here, in this process:

- ``GET /api/runs``: the runs to switch between (the run folder's siblings), each with
  its corpus, size, validation perplexity and date; and the generations running or
  waiting, and the tokens written since the server started.
- ``POST /api/next_words`` ``{"text", "k": 8, "run"}``: the k likeliest next tokens and
  their probabilities, ``<pad>`` and ``<unk>`` left out.
- ``POST /api/generate`` ``{"text", "num_tokens": 50, "strategy": "temperature",
  "temperature": 1.0, "top_k", "top_p", "samples": 1, "seed": 0, "max_lines", "run"}``:
  streamed as one JSON object a line (``application/x-ndjson``), ``{"sample", "token"}``
  for each token as it is written, then ``{"done": true, "tokens", "seconds"}``. The same
  tokens as ``python -m keras_rnnlm.generate`` writes for the same settings and seed.

A bad request is answered 400 (a setting out of range, as the command line words it),
404 (an unknown run), 413 (a body over :data:`MAX_BODY_BYTES`) or 503 (more generations
waiting than :data:`MAX_WAITING`), with ``{"error": "one sentence"}``. A client that
disconnects mid-stream stops its generation at the next token.

Starlette and uvicorn (``pip install ".[serve]"``): a small, well-kept ASGI toolkit whose
streamed responses notice a client that left; the standard library's http.server has
neither streaming helpers nor disconnect handling, and is documented as not for serving.
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m keras_rnnlm.serve: the arguments are checked before TensorFlow loads
    import sys

    from keras_rnnlm import cli

    sys.exit(cli.main("serve"))

import argparse
import asyncio
import json
import logging
import threading
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.generate import Generator
from keras_rnnlm.runs import RunFolder
from keras_rnnlm.sampling import STRATEGIES, Sampling, check_generation

logger = logging.getLogger("keras_rnnlm")

MAX_BODY_BYTES = 64 * 1024  # a request's JSON
MAX_TEXT_CHARACTERS = 20_000  # the text a request continues: about 4,000 words
MAX_TOKENS_PER_REQUEST = 2_000
MAX_SAMPLES = 8
MAX_NEXT_WORDS = 50
MAX_RUNNING = 4  # generations stepping at once; the others wait their turn
MAX_WAITING = 64  # beyond this, a request is refused (503) rather than queued
LOADED_RUNS = 2  # models kept in memory; switching to a third unloads the least recent
BACKEND_TAG = "<!-- backend -->"  # where index.html gets the served page's backend script


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Runs:
    """The runs the page can switch between (the run folders beside the default one),
    loaded when first asked for, the :data:`LOADED_RUNS` most recent kept."""

    def __init__(self, default: Path):
        self.default = default.resolve()
        self.folder = self.default.parent
        self.loaded: dict[str, Generator] = {}
        self.lock = threading.Lock()

    def names(self) -> list[str]:
        trained = (path.parent for path in self.folder.glob("*/model.keras"))
        return sorted(path.name for path in trained if (path / "config.toml").is_file() and (path / "vocabulary.txt").is_file())

    def describe(self) -> list[dict]:
        described = []
        for name in self.names():
            try:
                described.append(describe_run(self.folder / name))
            except RnnlmError as error:  # a damaged run is left out of the list, and said in the log
                logger.warning("warning: %s", error)
        return described

    def generator(self, name: str | None) -> Generator:
        name = name or self.default.name
        if name not in self.loaded and name not in self.names():  # a loaded run needs no look at the folder
            raise HTTPError(404, f"no trained run named {name!r} in {self.folder}; GET /api/runs lists them")
        with self.lock:  # one load at a time; a model loads in seconds
            if name not in self.loaded:
                if len(self.loaded) >= LOADED_RUNS:
                    del self.loaded[next(iter(self.loaded))]
                self.loaded[name] = warmed(Generator.from_run(self.folder / name))
            self.loaded[name] = self.loaded.pop(name)  # the most recent last
            return self.loaded[name]


def warmed(generator: Generator) -> Generator:
    """The generator, its functions traced once: the page's first request is answered at full speed."""
    list(generator.stream([""], 2))
    generator.next_words("", 1)
    return generator


def describe_run(path: Path) -> dict:
    """What the page lists of a run: its corpus, size, figures and date."""
    run = RunFolder(path)
    config = run.load_config()
    summary = json.loads(run.summary.read_text(encoding="utf-8")) if run.summary.is_file() else {}
    corpus = ", ".join(Path(name).name for name in config.corpus.paths) or f"built-in {config.corpus.builtin}"
    saved = datetime.fromtimestamp(run.model.stat().st_mtime, timezone.utc)
    return {"name": path.name, "corpus": corpus, "level": config.corpus.level, "mode": config.data.mode,
            "model_megabytes": round(run.model.stat().st_size / 1e6, 1), "val_perplexity": summary.get("val_perplexity"),
            "vocabulary_size": summary.get("vocabulary_size"), "saved": saved.strftime("%Y-%m-%d %H:%M UTC"),
            "tokenizer": {"level": config.corpus.level, "split": config.corpus.split, "lowercase": config.corpus.lowercase}}


class Turns:
    """At most :data:`MAX_RUNNING` generations step at once; :data:`MAX_WAITING` more may
    wait for a turn, and a request beyond those is refused before its answer starts."""

    def __init__(self):
        self.running = asyncio.Semaphore(MAX_RUNNING)
        self.holders = 0  # running or waiting
        self.tokens_written = 0  # since the server started

    def check(self) -> None:
        if self.holders >= MAX_RUNNING + MAX_WAITING:
            raise HTTPError(503, f"{self.holders} generations are running or waiting; try again in a moment")

    async def __aenter__(self):
        self.holders += 1
        try:
            await self.running.acquire()
        except BaseException:  # cancelled while waiting: the client left
            self.holders -= 1
            raise

    async def __aexit__(self, *exception):
        self.running.release()
        self.holders -= 1


# Each request's fields: {name: (type, default)}.
NUMBER = (int, float)
NEXT_WORDS_FIELDS = {"text": (str, ""), "k": (int, 8), "run": (str, None)}
GENERATE_FIELDS = {"text": (str, ""), "num_tokens": (int, 50), "strategy": (str, "temperature"), "temperature": (NUMBER, 1.0),
                   "top_k": (int, None), "top_p": (NUMBER, None), "samples": (int, 1), "seed": (int, 0),
                   "max_lines": (int, None), "run": (str, None)}


async def request_fields(request: Request, fields: dict) -> dict:
    """The request's JSON object, each field of ``fields`` ({name: (type, default)}) checked for its type."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPError(413, f"the request is over {MAX_BODY_BYTES // 1024} KB; send a shorter text")
    try:
        values = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HTTPError(400, "the request body is not JSON; send a JSON object such as {\"text\": \"the lord is my\"}") from None
    if not isinstance(values, dict):
        raise HTTPError(400, "the request body must be a JSON object")
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise HTTPError(400, f"unknown field {unknown[0]!r}; the fields are {', '.join(fields)}")
    checked = {}
    for name, (kind, default) in fields.items():
        value = values.get(name, default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            wanted = {str: "a string", int: "a whole number", NUMBER: "a number"}[kind]
            raise HTTPError(400, f"{name} must be {wanted}, got {json.dumps(value)}")
        checked[name] = value
    text = checked.get("text") or ""
    if len(text) > MAX_TEXT_CHARACTERS:
        raise HTTPError(400, f"the text is {len(text):,} characters; at most {MAX_TEXT_CHARACTERS:,} are read")
    return checked


def create_app(default_run: str | Path) -> Starlette:
    """The page and its API over the run ``default_run`` and the runs beside it."""
    runs = Runs(Path(default_run))
    turns = Turns()
    page = (resources.files("keras_rnnlm") / "page" / "index.html").read_text(encoding="utf-8")
    page = page.replace(BACKEND_TAG, '<script src="backend.js"></script>')

    def script(name: str) -> Response:
        source = (resources.files("keras_rnnlm") / "page" / name).read_text(encoding="utf-8")
        return Response(source, media_type="text/javascript")

    async def next_words(request: Request) -> Response:
        fields = await request_fields(request, NEXT_WORDS_FIELDS)
        if not 1 <= fields["k"] <= MAX_NEXT_WORDS:
            raise HTTPError(400, f"k must be between 1 and {MAX_NEXT_WORDS}, got {fields['k']}")
        generator = await run_in_threadpool(runs.generator, fields["run"])
        words = await run_in_threadpool(generator.next_words, fields["text"], fields["k"])
        return JSONResponse({"words": [{"word": word, "probability": probability} for word, probability in words]})

    async def generate(request: Request) -> Response:
        fields = await request_fields(request, GENERATE_FIELDS)
        try:
            if fields["strategy"] not in STRATEGIES:
                raise RnnlmError(f"strategy {fields['strategy']!r} is not one of {', '.join(STRATEGIES)}")
            sampling = Sampling.from_strategy(fields["strategy"], fields["temperature"], fields["top_k"], fields["top_p"])
            check_generation(fields["num_tokens"], fields["max_lines"], fields["seed"])
        except RnnlmError as error:
            raise HTTPError(400, str(error)) from None
        if fields["num_tokens"] > MAX_TOKENS_PER_REQUEST:
            raise HTTPError(400, f"num_tokens must be at most {MAX_TOKENS_PER_REQUEST:,} a request, got {fields['num_tokens']:,}")
        if not 1 <= fields["samples"] <= MAX_SAMPLES:
            raise HTTPError(400, f"samples must be between 1 and {MAX_SAMPLES}, got {fields['samples']}")
        turns.check()
        generator = await run_in_threadpool(runs.generator, fields["run"])

        async def lines():
            started, written = time.perf_counter(), 0
            async with turns:
                stream = generator.stream([fields["text"]] * fields["samples"], fields["num_tokens"], sampling,
                                          fields["seed"], fields["max_lines"])
                # One token a step, each on a worker thread: a client that disconnects
                # cancels this at the next await, and no more steps are computed.
                while (ids := await run_in_threadpool(next, stream, None)) is not None:
                    for sample, id_ in enumerate(ids.tolist()):
                        if id_:  # <pad>: that sample stopped
                            written += 1
                            turns.tokens_written += 1
                            yield json.dumps({"sample": sample, "token": generator.vocabulary.tokens[id_]}) + "\n"
            yield json.dumps({"done": True, "tokens": written, "seconds": round(time.perf_counter() - started, 3)}) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def list_runs(request: Request) -> Response:
        return JSONResponse({"default": runs.default.name, "runs": await run_in_threadpool(runs.describe),
                             "generations": turns.holders, "tokens_written": turns.tokens_written})

    async def http_error(request: Request, error: HTTPError) -> Response:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    return Starlette(
        routes=[
            Route("/", lambda request: HTMLResponse(page)),
            Route("/rnnlm.js", lambda request: script("rnnlm.js")),
            Route("/backend.js", lambda request: script("backend.js")),
            Route("/api/runs", list_runs),
            Route("/api/next_words", next_words, methods=["POST"]),
            Route("/api/generate", generate, methods=["POST"]),
        ],
        exception_handlers={HTTPError: http_error},
    )


def main(args: argparse.Namespace) -> int:
    """``python -m keras_rnnlm.serve``, its arguments checked (:func:`keras_rnnlm.arguments.serve`)."""
    import uvicorn

    app = create_app(args.model)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("warning: listening on %s: anyone who can reach this machine on port %d can use the page and the model",
                       args.host, args.port)
    logger.info("writing with %s at http://%s:%d (Ctrl-C stops)", args.model, "localhost" if args.host == "127.0.0.1" else args.host,
                args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0

