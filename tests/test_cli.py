"""First contact: a mistake on the command line is one line, at once, before TensorFlow loads."""

import os

import pytest
from conftest import run_as_main

from keras_rnnlm.notices import tensorflow_notices_dropped


def write(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "module, argv, message",
    [
        ("keras_rnnlm.train", ["--corpus", "missing.txt"], "error: corpus path missing.txt does not exist"),
        ("keras_rnnlm.train", ["--corpus", "binary.bin"], "error: binary.bin looks binary (a NUL byte at byte offset 2)"),
        ("keras_rnnlm.train", ["--set", "model.unitz=3"], "error: unknown config key model.unitz; did you mean model.units?"),
        ("keras_rnnlm.train", ["--config", "nowhere.toml"], "error: config file nowhere.toml does not exist"),
        ("keras_rnnlm.train", ["--frobnicate"], "error: unrecognized arguments: --frobnicate; see python -m keras_rnnlm.train --help"),
        ("keras_rnnlm.train", ["--epochs", "many"], "error: argument --epochs: invalid int value: 'many'"),
        ("keras_rnnlm.generate", ["--model", "nowhere"], "error: nowhere is not a keras_rnnlm run (no config.toml)"),
        ("keras_rnnlm.generate", ["--model", "untrained", "--top-p", "2"], "error: top-p must be in (0, 1], got 2.0"),
        ("keras_rnnlm.generate", ["--model", "untrained"], "error: untrained has no model.keras yet"),
        ("keras_rnnlm.generate", ["--model", "untrained", "--words", "0"], "error: the number of words must be between 1 and 100,000"),
        ("keras_rnnlm.evaluate", ["--model", "untrained", "--text", "missing.txt"], "error: untrained has no model.keras yet"),
        ("keras_rnnlm.evaluate", ["--model", "nowhere"], "error: the following arguments are required: --text"),
        ("keras_rnnlm.export", ["--model", "nowhere"], "error: nowhere is not a keras_rnnlm run"),
        ("keras_rnnlm.generate", ["--model", "untrained", "--prompt", "caf\udce9"], "error: the prompt is not valid UTF-8 (at character 4)"),
        ("keras_rnnlm.generate", ["--model", "untrained", "--num-samples", "1000000"], "error: --num-samples must be between 1 and 1,000"),
        ("keras_rnnlm.generate", ["--model", "untrained", "--seed", "99999999999"], "error: the seed must be between 0 and 2,147,483,647"),
        ("keras_rnnlm.serve", ["--model", "untrained"], "error: untrained has no model.keras yet"),
        ("keras_rnnlm.serve", ["--model", "untrained", "--port", "0"], "error: --port must be between 1 and 65535, got 0"),
        ("keras_rnnlm.export", ["--model", "untrained", "--format", "html"], "error: argument --format: invalid choice: 'html'"),
        ("keras_rnnlm.train", ["--set", "data.window_size=100000000"], "error: data.window_size = 100000000 is out of range"),
    ],
)
def test_a_mistake_is_one_line_on_stderr_and_status_2_before_tensorflow_loads(tmp_path, module, argv, message):
    write(tmp_path / "binary.bin", b"ab\x00cd")
    (tmp_path / "untrained").mkdir()
    (tmp_path / "untrained" / "config.toml").write_text('name = "untrained"\n')
    status, tensorflow_loaded, stdout, stderr = run_as_main(tmp_path, module, *argv)
    assert (status, stdout) == (2, "")
    assert len(stderr.splitlines()) == 1 and stderr.startswith(message), stderr
    assert not tensorflow_loaded


def test_the_filter_drops_tensorflows_start_up_notices_and_forwards_everything_else(capfd):
    with tensorflow_notices_dropped():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1796 2470 port.cc:153] oneDNN custom operations are on. You may see slightly different\n")
        os.write(2, b"E0000 00:00:1796 2470 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n")
        os.write(2, b"a real warning\nE0000 00:00:1796 2470 util.cc:131] oneDNN supports DT_INT32 only on platforms with AVX-512.")
        os.write(2, b" Falling back\nW0000 something TensorFlow wants you to know\nno newline at the end")
    assert capfd.readouterr().err == "a real warning\nW0000 something TensorFlow wants you to know\nno newline at the end"
    os.write(2, b"after\n")  # descriptor 2 is itself again
    assert capfd.readouterr().err == "after\n"
