"""The README's set-up commands are the ones CI runs, and the flags it documents exist."""

import re
from pathlib import Path

from keras_rnnlm.config import config_keys
from keras_rnnlm.arguments import train_parser as build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
INSTALL_AND_RUN = 'pip install . && python -m keras_rnnlm.train && python -m keras_rnnlm.generate --prompt "the lord is my"'
INSTALL_AND_TEST = 'pip install ".[test]" && python -m pytest'


def test_readme_gives_the_two_setup_commands_and_ci_runs_the_test_one():
    assert f"```bash\n{INSTALL_AND_RUN}\n```" in README
    assert f"```bash\n{INSTALL_AND_TEST}\n```" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert INSTALL_AND_TEST in ci.splitlines()
    assert "venv" in ci


def test_every_config_key_is_in_the_reference_table():
    reference = README.split("## Configuration reference")[1].split("\n## ")[0]
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", reference, flags=re.MULTILINE))
    assert documented == set(config_keys())


def test_every_flag_in_the_options_table_exists():
    documented = re.findall(r"^\| `(--[a-z-]+)", README, flags=re.MULTILINE)
    assert "--corpus" in documented and "--overwrite" in documented
    flags = build_parser()._option_string_actions
    for flag in documented:
        assert flag in flags, flag
