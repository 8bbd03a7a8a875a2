"""keras_rnnlm: train recurrent language models on your own text and write new text.

The modules follow the data: ``config`` -> ``corpus`` / ``tokenizer`` / ``vocab``
(text -> ids) -> ``data`` (ids -> tf.data windows) -> ``model`` -> ``train`` ->
``generate``; ``evaluate`` scores a trained run on new text.
"""

import os

# TensorFlow's C++ start-up notices (oneDNN, CPU instructions) drown the messages a user
# needs; a user who wants them sets TF_CPP_MIN_LOG_LEVEL themselves.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
