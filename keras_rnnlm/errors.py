"""The one exception type keras_rnnlm raises for problems a user can fix."""


class RnnlmError(Exception):
    """A problem with the user's input: a path, a corpus, a config value or a run folder.

    The message is one sentence that says what is wrong and what to do about it. The
    command-line entry points print it as ``error: <message>`` and exit with status 2,
    instead of showing a traceback.
    """
