"""Training speed in bptt mode: keras_rnnlm against the PyTorch word-language-model example.

Both train the PyTorch example's default model on the same synthetic token stream
(Zipf-distributed ids): vocabulary 33,278 (WikiText-2's), embedding 200, two LSTM layers
of 200, dropout 0.2, tied embeddings, 20 lanes, BPTT 35, SGD at learning rate 20 with the
gradient norm clipped at 0.25. The figure is tokens (targets) per second: the median of
``--repeats`` epochs of ``--steps`` steps each, after a warm-up epoch, the paths in
processes of their own taking turns one epoch at a time (``train_speed.measure``).

Paths:
- ``keras_rnnlm_float32`` and ``keras_rnnlm_mixed``: keras_rnnlm's bptt training as
  ``python -m keras_rnnlm.train`` runs it (lanes from ``keras_rnnlm.data``, the training
  model of ``keras_rnnlm.model.training_model`` fed to ``fit``), in float32 and in mixed
  precision (bfloat16 on a CPU).
- ``torch`` and ``torch_bfloat16``: the example's ``RNNModel`` and ``train()`` loop
  (``batchify``, ``get_batch``, ``repackage_hidden``, ``clip_grad_norm_``, the manual SGD
  update), default threads; the second under ``torch.autocast("cpu", dtype=torch.bfloat16)``,
  PyTorch's fastest CPU setting here.

Usage:
    pip install ".[bench]"      # PyTorch (CPU)
    python benchmarks/bptt_speed.py [--repeats 5] [--steps 100] [--paths keras_rnnlm_float32 torch ...]
    python benchmarks/bptt_speed.py --paths keras_rnnlm_float32 keras_rnnlm_layer_norm keras_rnnlm_attention \\
        keras_rnnlm_attention_layer_norm    # issue 28's options, against without, in one run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from train_speed import _Turns, measure, token_stream, training_flops_per_window  # noqa: E402

from keras_rnnlm.callbacks import ResetStates  # noqa: E402
from keras_rnnlm.config import ModelConfig, TrainConfig  # noqa: E402
from keras_rnnlm.data import lanes, training_lanes  # noqa: E402
from keras_rnnlm.devices import select_strategy, set_precision  # noqa: E402
from keras_rnnlm.model import build_model, compile_model, training_model  # noqa: E402

PATHS = ("keras_rnnlm_float32", "keras_rnnlm_mixed", "torch", "torch_bfloat16",
         "keras_rnnlm_layer_norm", "keras_rnnlm_attention", "keras_rnnlm_attention_layer_norm")
# The architecture options of issue 28, in float32: not part of the default paths.
DEFAULT_PATHS = PATHS[:4]


def model_config(args, **options) -> ModelConfig:
    return ModelConfig(embedding_dim=args.units, units=args.units, layers=args.layers, dropout=0.2, tie_embeddings=True,
                       **options)


def keras_rnnlm_training(ids, args, precision: str, **options):
    """keras_rnnlm's bptt training (``options``: more ModelConfig fields, such as
    attention or layer_norm); returns (tokens per epoch, train(epochs, callback))."""
    train_config = TrainConfig(optimizer="sgd", learning_rate=20.0, clipnorm=0.25)
    strategy = select_strategy("cpu")
    set_precision(precision, strategy)
    config = model_config(args, **options)
    with strategy.scope():
        model = build_model(config, None, args.vocabulary)
        compile_model(model, train_config)
        trainer = training_model(model, train_config, lanes=args.lanes, bptt_steps=args.bptt, tie_embeddings=True,
                                 attention_memory=config.memory)
    keras.mixed_precision.set_global_policy("float32")
    text = lanes([ids[1:]], args.lanes, args.bptt)
    feed, steps_per_epoch = training_lanes(text), text.num_steps

    def train(epochs, callback):
        trainer.fit(feed, steps_per_epoch=steps_per_epoch, epochs=epochs, callbacks=[ResetStates(), callback], shuffle=False, verbose=0)

    return steps_per_epoch * args.lanes * args.bptt, train


def torch_training(ids, args, bfloat16: bool):
    """The PyTorch example's model and loop; returns (tokens per epoch, train(epochs, callback))."""
    import contextlib

    import torch
    from torch import nn

    class RNNModel(nn.Module):  # the example's model.py, LSTM and tied
        def __init__(self, ntoken, ninp, nhid, nlayers, dropout=0.2):
            super().__init__()
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(ntoken, ninp)
            self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
            self.decoder = nn.Linear(nhid, ntoken)
            self.decoder.weight = self.encoder.weight
            nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)
            self.ntoken, self.nhid, self.nlayers = ntoken, nhid, nlayers

        def forward(self, input, hidden):
            output, hidden = self.rnn(self.drop(self.encoder(input)), hidden)
            decoded = self.decoder(self.drop(output)).view(-1, self.ntoken)
            return nn.functional.log_softmax(decoded, dim=1), hidden

        def init_hidden(self, batch_size):
            weight = next(self.parameters())
            return (weight.new_zeros(self.nlayers, batch_size, self.nhid), weight.new_zeros(self.nlayers, batch_size, self.nhid))

    torch.manual_seed(0)
    model = RNNModel(args.vocabulary, args.units, args.units, args.layers)
    criterion = nn.NLLLoss()
    data = torch.from_numpy(ids.astype(np.int64))
    data = data[: data.size(0) // args.lanes * args.lanes].view(args.lanes, -1).t().contiguous()  # batchify
    precision = torch.autocast("cpu", dtype=torch.bfloat16) if bfloat16 else contextlib.nullcontext()

    def train(epochs, callback):
        model.train()
        for epoch in range(epochs):
            callback.on_epoch_begin(epoch)
            hidden = model.init_hidden(args.lanes)
            for i in range(0, data.size(0) - 1, args.bptt):
                seq_len = min(args.bptt, data.size(0) - 1 - i)
                source, targets = data[i : i + seq_len], data[i + 1 : i + 1 + seq_len].reshape(-1)  # get_batch
                model.zero_grad()
                hidden = tuple(h.detach() for h in hidden)  # repackage_hidden
                with precision:
                    output, hidden = model(source, hidden)
                    loss = criterion(output, targets)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
                for p in model.parameters():
                    p.data.add_(p.grad, alpha=-20.0)
            callback.on_epoch_end(epoch)

    return (data.size(0) - 1) * args.lanes, train


def _worker(connection, path: str, settings: dict) -> None:
    keras.utils.set_random_seed(0)
    args = argparse.Namespace(**settings)
    ids = token_stream(args.steps * args.lanes * args.bptt + 1, args.vocabulary)
    builders = {
        "keras_rnnlm_float32": lambda: keras_rnnlm_training(ids, args, "float32"),
        "keras_rnnlm_mixed": lambda: keras_rnnlm_training(ids, args, "mixed"),
        "torch": lambda: torch_training(ids, args, bfloat16=False),
        "torch_bfloat16": lambda: torch_training(ids, args, bfloat16=True),
        "keras_rnnlm_layer_norm": lambda: keras_rnnlm_training(ids, args, "float32", layer_norm=True),
        "keras_rnnlm_attention": lambda: keras_rnnlm_training(ids, args, "float32", attention=True,
                                                              attention_memory=args.attention_memory),
        "keras_rnnlm_attention_layer_norm": lambda: keras_rnnlm_training(ids, args, "float32", attention=True, layer_norm=True,
                                                                         attention_memory=args.attention_memory),
    }
    tokens, train = builders[path]()
    train(args.repeats + 1, _Turns(connection, tokens))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(DEFAULT_PATHS))
    parser.add_argument("--attention-memory", type=int, default=512, help="outputs the attention paths remember (default: 512)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100, help="steps per measured epoch")
    parser.add_argument("--vocabulary", type=int, default=33_278)
    parser.add_argument("--units", type=int, default=200, help="embedding and LSTM units (tied)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lanes", type=int, default=20)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--matmul-size", type=int, default=4096)
    args = parser.parse_args(argv)

    speeds, (peak_before, peak_after) = measure(_worker, args.paths, vars(args), args.repeats, args.matmul_size)
    peak = max(peak_before, peak_after)
    flops = training_flops_per_window(model_config(args), 1, args.vocabulary)  # per token: one position
    medians = {path: statistics.median(values) for path, values in speeds.items()}
    print(f"vocabulary {args.vocabulary:,}, {args.layers} x LSTM {args.units} tied, {args.lanes} lanes, BPTT {args.bptt}, "
          f"SGD; {args.repeats} repeats of {args.steps} steps, medians; {os.cpu_count()} CPUs; TensorFlow {tf.__version__}")
    print(f"float32 matmul peak: {peak / 1e9:,.0f} GFLOPS; training FLOPs per token: {flops / 1e6:.1f} M")
    for path, value in medians.items():
        print(f"{path:>32}: {value:9,.0f} tokens/s  ({value * flops / peak:5.1%} of the float32 matmul peak)")
    for option in PATHS[4:]:
        if option in medians and "keras_rnnlm_float32" in medians:
            print(f"{option} vs keras_rnnlm_float32: {medians[option] / medians['keras_rnnlm_float32']:.2f}x")
    for ours in ("keras_rnnlm_float32", "keras_rnnlm_mixed"):
        for theirs in ("torch", "torch_bfloat16"):
            if ours in medians and theirs in medians:
                print(f"{ours} vs {theirs}: {medians[ours] / medians[theirs]:.2f}x")
    result = {"tokens_per_second": medians, "runs": speeds, "matmul_peak_flops": peak, "flops_per_token": flops}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
