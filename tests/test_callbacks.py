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


def test_weight_averaging_judges_with_the_average_and_trains_on_the_raw_weights():
    from keras_rnnlm.callbacks import AveragedWeights

    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32)

    def model():
        keras.utils.set_random_seed(0)
        built = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        built.compile(keras.optimizers.SGD(0.05, use_ema=True, ema_momentum=0.9), "mse")
        return built

    def weights(of):
        return [variable.numpy().copy() for variable in of.trainable_variables]

    plain, raw_at_end = model(), []
    plain.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: raw_at_end.append(weights(plain)))])
    average_at_end = weights(plain)  # Keras puts the average in place when fit ends

    averaged_model = model()
    averaged = AveragedWeights(averaged_model)
    judged = []
    averaged_model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, validation_data=(x, y),
                       callbacks=[averaged.average_in, keras.callbacks.LambdaCallback(
                           on_epoch_end=lambda epoch, logs: judged.append(weights(averaged_model))), averaged.raw_back])
    for ours, theirs in zip(judged[-1], average_at_end):  # the epoch's end saw the average
        np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    for ours, theirs in zip(weights(averaged_model), raw_at_end[-1]):  # and training went on from the raw weights
        np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    assert not np.allclose(judged[-1][0], raw_at_end[-1][0])


def test_warm_up_raises_the_step_size_over_its_steps_and_a_resumed_fit_goes_on_where_it_was():
    from keras_rnnlm.callbacks import WarmUp

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.01), "mse")
    rates = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: rates.append(float(model.optimizer.learning_rate.numpy())))
    model.fit(np.ones((24, 3)), np.zeros((24, 1)), batch_size=8, epochs=1, verbose=0, callbacks=[WarmUp(4, 0.01), record])
    model.fit(np.ones((24, 3)), np.zeros((24, 1)), batch_size=8, epochs=1, verbose=0, callbacks=[WarmUp(4, 0.01), record])
    np.testing.assert_allclose(rates, [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01], rtol=1e-6)
