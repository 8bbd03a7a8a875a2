"""The one exception type keras_rnnlm raises for problems a user can fix, and how its
message is printed."""

import re

# Control characters (a NUL, the escape that starts a terminal sequence), but for the tab
# and the line break.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class RnnlmError(Exception):
    """A problem with the user's input: a path, a corpus, a config value or a run folder.

    The message is one sentence that says what is wrong and what to do about it. The
    command-line entry points print it as ``error: <message>`` and exit with status 2,
    instead of showing a traceback.
    """


def printable(text: str, line_breaks: bool = True) -> str:
    """``text`` as it is safe to print on a terminal: each control character written as
    ``\\xNN``, and each line break too unless ``line_breaks`` (an error message names a
    path as the user typed it, and must stay one line)."""
    pattern = CONTROL_CHARACTERS if line_breaks else re.compile(f"{CONTROL_CHARACTERS.pattern}|[\\n\\t]")
    return pattern.sub(lambda match: f"\\x{ord(match.group()):02x}", text)
