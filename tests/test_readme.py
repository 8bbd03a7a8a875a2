"""The README's set-up commands are the ones CI runs, its links lead somewhere, and the
flags the manual documents exist."""

import re
from pathlib import Path

from keras_rnnlm.arguments import train_parser

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


def test_every_relative_link_of_the_readme_and_the_manual_leads_to_a_file():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    linked = set()
    for page in pages:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
            linked.add((page.parent / target).resolve())
    assert {page.resolve() for page in pages[1:]} <= linked  # every page of the manual is reachable


def test_every_flag_in_the_manuals_flag_table_exists():
    documented = re.findall(r"^\| `(--[a-z-]+)", (ROOT / "docs" / "configuration.md").read_text(), flags=re.MULTILINE)
    assert "--corpus" in documented and "--overwrite" in documented
    flags = train_parser()._option_string_actions
    for flag in documented:
        assert flag in flags, flag
