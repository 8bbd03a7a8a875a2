"""A trained run as a static web page that writes with the model in the browser:
``python -m keras_rnnlm.export --format web``.

The folder holds ``index.html`` (the writing page), ``rnnlm.js`` (the model, tokenizer and
sampling in plain JavaScript over typed arrays), ``model.json`` (the tokenizer's
settings, the vocabulary, the layers and where each weight lies in ``weights.bin``) and
``weights.bin`` (float32, little-endian). Any static file server serves it
(``python -m http.server``, GitHub Pages); nothing is fetched from elsewhere.

Why a hand-written runtime: TensorFlow.js cannot read Keras 3 models, and an ONNX
runtime for the browser is a WebAssembly binary of several megabytes, more than the
default run's weights; the model is an embedding, a few recurrent cells and one matrix
product, about 300 lines of JavaScript (tested equal to Keras: tests/test_web.py).
"""

from __future__ import annotations

import json
import logging
import shutil
from importlib import resources
from pathlib import Path

import keras
import numpy as np

from keras_rnnlm.errors import RnnlmError
from keras_rnnlm.files import Owned, written_folder
from keras_rnnlm.runs import RunFolder

logger = logging.getLogger("keras_rnnlm")

FORMAT = "keras_rnnlm.web/1"
PAGE_FILES = ("index.html", "rnnlm.js")  # keras_rnnlm/page/, copied as they are


def export_web(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Writes the static page of a run's model into ``out_dir`` (a temporary folder
    renamed into place, so an interrupted export leaves any earlier one whole).

    Raises:
        RnnlmError: The run's model has a part the page does not run (attention), or
            ``out_dir`` holds anything but a web export of keras_rnnlm's.
    """
    out_dir = Path(out_dir)
    Owned(out_dir, "web export").check("choose another --out")
    run = RunFolder(run_dir)
    config, vocabulary, tokenizer, model = run.load()
    manifest, arrays = model_manifest(model, config)
    manifest.update(
        format=FORMAT,
        run=describe_run(run),
        tokenizer={"level": tokenizer.level, "split": tokenizer.split, "lowercase": tokenizer.lowercase},
        window_size=None if config.data.mode == "bptt" else config.data.window_size,
        line_mode=config.corpus.sequences == "lines",
        vocabulary=list(vocabulary.tokens),
    )
    with written_folder(out_dir) as temporary:
        Owned(temporary, "web export").claim()
        temporary.chmod(0o755)  # a static file server may run as another user
        with open(temporary / "weights.bin", "wb") as weights:
            for array in arrays:
                weights.write(array.astype("<f4").tobytes())
        (temporary / "model.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
        for name in PAGE_FILES:
            with resources.as_file(resources.files("keras_rnnlm") / "page" / name) as page_file:
                shutil.copyfile(page_file, temporary / name)
        (temporary / "README.txt").write_text(README.format(run=run.path), encoding="utf-8")
    size = sum(path.stat().st_size for path in out_dir.iterdir())
    logger.info("exported %s to %s (%.1f MB): serve the folder, e.g. python -m http.server -d %s, and open "
                "http://localhost:8000", run.path, out_dir, size / 1e6, out_dir)
    return out_dir


def model_manifest(model: keras.Model, config) -> tuple[dict, list[np.ndarray]]:
    """What rnnlm.js reads of the model: its layers, and each weight's place (in floats)
    in ``weights.bin``; and the weights in that order.

    Raises:
        RnnlmError: A layer rnnlm.js does not run.
    """
    if config.model.attention:
        raise RnnlmError("export --format web does not run attention (model.attention = true) yet; "
                         "export a SavedModel (--format saved_model) for this run")
    weights, arrays, offset = {}, [], 0

    def add(name: str, array: np.ndarray) -> None:
        nonlocal offset
        array = np.ascontiguousarray(array, dtype=np.float32)
        weights[name] = {"offset": offset, "shape": list(array.shape)}
        arrays.append(array)
        offset += array.size

    embedding = model.get_layer("embedding").embeddings.numpy()
    add("embedding", embedding)
    layers = []
    for number in range(1, config.model.layers + 1):
        cell = model.get_layer(f"{config.model.cell}_{number}")
        if config.model.cell == "gru" and not cell.cell.reset_after:
            raise RnnlmError(f"{cell.name} is a GRU without reset_after, which export --format web does not run")
        name = cell.name
        kernel, recurrent_kernel, bias = (variable.numpy() for variable in cell.cell.weights)
        # Kernels transposed, (out, in): rnnlm.js sums each output along contiguous memory.
        add(f"{name}/kernel_t", kernel.T)
        add(f"{name}/recurrent_kernel_t", recurrent_kernel.T)
        add(f"{name}/bias", bias.reshape(-1))  # a GRU's (2, 3 units): the input bias, then the recurrent one
        layer = {"name": name, "cell": config.model.cell, "units": config.model.units, "layer_norm": None}
        if config.model.layer_norm:
            norm = model.get_layer(f"layer_norm_{number}")
            add(f"{norm.name}/gamma", norm.gamma.numpy())
            add(f"{norm.name}/beta", norm.beta.numpy())
            layer["layer_norm"] = {"name": norm.name, "epsilon": float(norm.epsilon)}
        layers.append(layer)
    output = model.get_layer("next_token")
    kernel = output.kernel.numpy()
    tied = kernel.shape == embedding.T.shape and np.array_equal(kernel, embedding.T)
    if not tied:  # tied embeddings are kept once: the page reads the embedding matrix for both
        add("next_token/kernel_t", kernel.T)
    add("next_token/bias", output.bias.numpy())
    return {"layers": layers, "tied": bool(tied), "weights": weights}, arrays


def describe_run(run: RunFolder) -> dict:
    """What the page shows of the run: its name, and its summary's figures."""
    summary = json.loads(run.summary.read_text(encoding="utf-8")) if run.summary.is_file() else {}
    return {"name": run.path.resolve().name, "val_perplexity": summary.get("val_perplexity"),
            "vocabulary_size": summary.get("vocabulary_size"), "epochs": summary.get("epochs")}


README = """\
A keras_rnnlm language model that writes in the browser, exported from {run}.

Serve this folder with any static file server and open it, for example:
    python -m http.server --directory . 8000      then http://localhost:8000
(Opened straight from the disk, a browser will not let the page read model.json and
weights.bin beside it.)

index.html   the writing page
rnnlm.js     the model, tokenizer and sampling in JavaScript (no library)
model.json   the tokenizer, the vocabulary, the layers and where their weights lie
weights.bin  the weights, float32 little-endian
"""
