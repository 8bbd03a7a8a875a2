"""The run's own callbacks."""

import keras
import numpy as np
import tensorflow as tf

from keras_rnnlm.callbacks import EpochTensorBoard


def scalar_tags(folder):
    tags = set()
    for path in folder.rglob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags |= {value.tag for value in event.summary.value}
    return tags


def test_tensorboard_writes_each_epochs_training_and_validation_logs(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(np.ones((8, 3)), np.zeros((8, 1)), validation_data=(np.ones((4, 3)), np.zeros((4, 1))), epochs=2, verbose=0,
              callbacks=[EpochTensorBoard(str(tmp_path))])
    assert scalar_tags(tmp_path / "train") >= {"epoch_loss", "epoch_learning_rate"}
    assert "epoch_loss" in scalar_tags(tmp_path / "validation")
    assert not {tag for tag in scalar_tags(tmp_path) if tag.startswith("batch_")}


def test_the_time_budget_stops_after_the_first_epoch_that_ends_past_it(monkeypatch):
    from keras_rnnlm import callbacks

    now = [1000.0]  # a clock on which each epoch takes a minute
    monkeypatch.setattr(callbacks.time, "time", lambda: now[0])
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    minute_an_epoch = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: now.__setitem__(0, now[0] + 60))
    history = model.fit(np.ones((8, 3)), np.zeros((8, 1)), epochs=10, verbose=0,
                        callbacks=[minute_an_epoch, callbacks.TimeBudget(minutes=2.5, started=1000.0)])
    assert len(history.history["loss"]) == 3  # 3 minutes spent at the third epoch's end: past 2.5
