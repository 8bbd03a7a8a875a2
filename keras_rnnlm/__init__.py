"""keras_rnnlm: train recurrent language models on your own text and write new text.

The modules follow the data: ``config`` -> ``corpus`` / ``tokenizer`` / ``vocab`` /
``encoding`` (text -> ids) -> ``splits`` (which ids train and which validate; ``prepare``
writes them once to disk as ``shards``) -> ``data`` (ids -> tf.data windows or bptt lanes) ->
``model`` (the saved Keras model, and the model that trains it) with ``speedups`` (the
measured speed paths it trains through) -> ``train`` (with ``callbacks``, ``backup`` and
``runs``, the run folder) -> ``generate`` (with ``inference``, the next token's logits, and
``sampling``, the choice of it) -> ``export``; ``evaluate`` scores a trained run on new
text. ``commands`` and ``cli`` are the command line.
"""

__version__ = "0.1.0"
