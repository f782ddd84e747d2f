"""Callbacks: hook order, step indices under steps_per_execution, Keras
callbacks, History, batch logs, laziness of log reads, verbosity, predict
hooks and exact step counts with steps_per_epoch."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from tolerances import ATOL

import tfk_trainer as tfk

FEATURES = 4


def _data(n: int):
    x = np.random.rand(n, FEATURES).astype("float32")
    y = (x.sum(axis=1, keepdims=True) > 2.0).astype("float32")
    return x, y


def _model(**compile_kwargs) -> tfk.Model:
    net = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(1)])
    model = tfk.Model(net)
    kwargs = {"optimizer": keras.optimizers.SGD(0.05), "loss": "mse", "metrics": ["mae"]}
    kwargs.update(compile_kwargs)
    model.compile(**kwargs)
    return model


def _iterations(model: tfk.Model) -> int:
    return int(model.optimizer.iterations.numpy())


_ALL_HOOKS = (
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_begin",
    "on_test_end",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_begin",
    "on_predict_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
)


class Recorder(tfk.callbacks.Callback):
    """Records every hook as `(name, index)`; `index` is the batch or epoch or None."""

    def __init__(self):
        super().__init__()
        self.events: list[tuple[str, int | None]] = []
        self.batch_logs: list[dict] = []

    def _rec(self, name, index=None):
        self.events.append((name, index))

    def on_train_begin(self, logs=None):
        self._rec("on_train_begin")

    def on_train_end(self, logs=None):
        self._rec("on_train_end")

    def on_epoch_begin(self, epoch, logs=None):
        self._rec("on_epoch_begin", epoch)

    def on_epoch_end(self, epoch, logs=None):
        self._rec("on_epoch_end", epoch)

    def on_train_batch_begin(self, batch, logs=None):
        self._rec("on_train_batch_begin", batch)

    def on_train_batch_end(self, batch, logs=None):
        self._rec("on_train_batch_end", batch)
        self.batch_logs.append(dict(logs or {}))

    def on_test_begin(self, logs=None):
        self._rec("on_test_begin")

    def on_test_end(self, logs=None):
        self._rec("on_test_end")

    def on_test_batch_begin(self, batch, logs=None):
        self._rec("on_test_batch_begin", batch)

    def on_test_batch_end(self, batch, logs=None):
        self._rec("on_test_batch_end", batch)

    def on_predict_begin(self, logs=None):
        self._rec("on_predict_begin")

    def on_predict_end(self, logs=None):
        self._rec("on_predict_end")

    def on_predict_batch_begin(self, batch, logs=None):
        self._rec("on_predict_batch_begin", batch)

    def on_predict_batch_end(self, batch, logs=None):
        self._rec("on_predict_batch_end", batch)

    def indices(self, name):
        return [i for n, i in self.events if n == name]


# (1) --------------------------------------------------------------------------


def test_hook_order_fit_with_validation():
    x, y = _data(20)
    xv, yv = _data(10)
    rec = Recorder()
    _model().fit(
        x, y, batch_size=10, epochs=2, validation_data=(xv, yv), callbacks=[rec], verbose=0
    )
    epoch = lambda e: [  # noqa: E731
        ("on_epoch_begin", e),
        ("on_train_batch_begin", 0),
        ("on_train_batch_end", 0),
        ("on_train_batch_begin", 1),
        ("on_train_batch_end", 1),
        ("on_test_begin", None),
        ("on_test_batch_begin", 0),
        ("on_test_batch_end", 0),
        ("on_test_end", None),
        ("on_epoch_end", e),
    ]
    expected = [("on_train_begin", None), *epoch(0), *epoch(1), ("on_train_end", None)]
    assert rec.events == expected


# (2) --------------------------------------------------------------------------


def test_batch_indices_with_steps_per_execution():
    x, y = _data(100)
    rec = Recorder()
    _model(steps_per_execution=4).fit(x, y, batch_size=10, epochs=1, callbacks=[rec], verbose=0)
    assert rec.indices("on_train_batch_begin") == [0, 4, 8]
    # True step indices of the last step of each execution, clamped to the epoch
    # (Keras reports 3, 7, 11).
    assert rec.indices("on_train_batch_end") == [3, 7, 9]


# (3) --------------------------------------------------------------------------


class KerasStopOnBatch(keras.callbacks.Callback):
    def __init__(self, stop_at_batch: int):
        super().__init__()
        self.stop_at_batch = stop_at_batch
        self.seen_model = None
        self.batches: list[int] = []
        self.epochs: list[int] = []

    def on_train_batch_end(self, batch, logs=None):
        self.seen_model = self.model
        self.batches.append(batch)
        if batch == self.stop_at_batch:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)


class KerasStopOnEpoch(keras.callbacks.Callback):
    def __init__(self, stop_at_epoch: int):
        super().__init__()
        self.stop_at_epoch = stop_at_epoch
        self.epochs: list[int] = []
        self.began = 0

    def on_train_begin(self, logs=None):
        self.began += 1

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)
        if epoch == self.stop_at_epoch:
            self.model.stop_training = True


def test_keras_callback_stop_in_train_batch_end():
    x, y = _data(100)
    model = _model()
    cb = KerasStopOnBatch(stop_at_batch=2)
    history = model.fit(x, y, batch_size=10, epochs=3, callbacks=[cb], verbose=0)
    assert cb.seen_model is model
    assert cb.batches == [0, 1, 2]
    assert _iterations(model) == 3
    assert history.epoch == [0]
    assert cb.epochs == [0]


def test_keras_callback_stop_in_train_batch_end_stops_after_execution():
    x, y = _data(100)
    model = _model(steps_per_execution=4)
    cb = KerasStopOnBatch(stop_at_batch=3)
    model.fit(x, y, batch_size=10, epochs=3, callbacks=[cb], verbose=0)
    assert cb.batches == [3]
    assert _iterations(model) == 4


def test_keras_callback_stop_in_epoch_end():
    x, y = _data(40)
    model = _model()
    cb = KerasStopOnEpoch(stop_at_epoch=1)
    history = model.fit(x, y, batch_size=10, epochs=5, callbacks=[cb], verbose=0)
    assert cb.began == 1
    assert cb.epochs == [0, 1]
    assert history.epoch == [0, 1]
    assert _iterations(model) == 8


# (4) --------------------------------------------------------------------------


def test_history():
    x, y = _data(40)
    xv, yv = _data(10)
    model = _model()
    history = model.fit(x, y, batch_size=10, epochs=3, validation_data=(xv, yv), verbose=0)
    assert isinstance(history, tfk.callbacks.History)
    assert model.history is history
    assert history.epoch == [0, 1, 2]
    assert set(history.history) == {"loss", "mae", "val_loss", "val_mae"}
    for values in history.history.values():
        assert len(values) == 3
        assert all(isinstance(v, float) for v in values)

    second = model.fit(x, y, batch_size=10, epochs=5, initial_epoch=3, verbose=0)
    assert model.history is second
    assert second.epoch == [3, 4]
    assert len(second.history["loss"]) == 2


# (5) --------------------------------------------------------------------------


def test_train_batch_logs_have_loss_and_metrics_as_floats():
    x, y = _data(30)
    rec = Recorder()
    _model().fit(x, y, batch_size=10, epochs=1, callbacks=[rec], verbose=0)
    assert len(rec.batch_logs) == 3
    for logs in rec.batch_logs:
        assert set(logs) >= {"loss", "mae"}
        assert isinstance(logs["loss"], float)
        assert isinstance(logs["mae"], float)
        assert np.isfinite(logs["loss"])


# (6) --------------------------------------------------------------------------


def test_logs_read_once_per_epoch_without_batch_callbacks():
    x, y = _data(40)
    model = _model()
    model.fit(x, y, batch_size=10, epochs=1, verbose=0)  # builds the model and executor
    executor = model._executor
    original = executor.read_logs
    calls = []

    def counting_read_logs(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    executor.read_logs = counting_read_logs
    model.fit(x, y, batch_size=10, epochs=3, verbose=0)
    assert model._executor is executor
    assert len(calls) == 3


# (7) --------------------------------------------------------------------------


def test_verbose_2_prints_one_line_per_epoch(capsys):
    x, y = _data(20)
    _model().fit(x, y, batch_size=10, epochs=2, verbose=2)
    out = capsys.readouterr().out
    loss_lines = [line for line in out.splitlines() if "loss" in line]
    assert len(loss_lines) == 2, out


def test_verbose_0_prints_nothing(capsys):
    x, y = _data(20)
    model = _model()
    model.fit(x, y, batch_size=10, epochs=2, verbose=0)
    model.evaluate(x, y, verbose=0)
    model.predict(x, verbose=0)
    captured = capsys.readouterr()
    assert captured.out == ""


def test_verbose_1_prints_progress_bar(capsys):
    x, y = _data(20)
    _model().fit(x, y, batch_size=10, epochs=1, verbose=1)
    out = capsys.readouterr().out
    assert "━" in out  # keras.utils.Progbar's bar
    assert "2/2" in out
    assert "loss" in out


# (8) --------------------------------------------------------------------------


def test_predict_batch_end_gets_outputs():
    class Outputs(tfk.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.logs = []

        def on_predict_batch_end(self, batch, logs=None):
            self.logs.append((batch, logs))

    x, _ = _data(30)
    model = _model()
    cb = Outputs()
    preds = model.predict(x, batch_size=10, callbacks=[cb], verbose=0)
    assert [b for b, _ in cb.logs] == [0, 1, 2]
    for _, logs in cb.logs:
        assert set(logs) == {"outputs"}
        assert np.asarray(logs["outputs"]).shape == (10, 1)
    gathered = np.concatenate([np.asarray(logs["outputs"]) for _, logs in cb.logs])
    np.testing.assert_allclose(gathered, preds, atol=ATOL)


def test_predict_hook_order():
    x, _ = _data(20)
    rec = Recorder()
    _model().predict(x, batch_size=10, callbacks=[rec], verbose=0)
    assert rec.events == [
        ("on_predict_begin", None),
        ("on_predict_batch_begin", 0),
        ("on_predict_batch_end", 0),
        ("on_predict_batch_begin", 1),
        ("on_predict_batch_end", 1),
        ("on_predict_end", None),
    ]


# (9) --------------------------------------------------------------------------


@pytest.mark.parametrize("steps_per_epoch, expected", [(3, 6), (10, 20)])
def test_steps_per_epoch_exact_with_steps_per_execution(steps_per_epoch, expected):
    x, y = _data(40)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(10).repeat()
    model = _model(steps_per_execution=4)
    rec = Recorder()
    model.fit(ds, epochs=2, steps_per_epoch=steps_per_epoch, callbacks=[rec], verbose=0)
    # Keras overruns to a multiple of steps_per_execution (8 for 3 steps/epoch).
    assert _iterations(model) == expected
    ends = rec.indices("on_train_batch_end")
    assert max(ends) == steps_per_epoch - 1
    assert ends.count(steps_per_epoch - 1) == 2


# (10) -------------------------------------------------------------------------


def test_finite_dataset_shorter_than_steps_per_epoch_warns_and_starts_fresh_passes():
    """As Keras 3 (issue 19, item 17): each epoch ends with the data, the next restarts it."""
    x, y = _data(50)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)  # 5 batches, no repeat
    model = _model()
    with pytest.warns(UserWarning, match=r"ran out of data"):
        history = model.fit(ds, epochs=3, steps_per_epoch=8, verbose=0)
    assert _iterations(model) == 15
    assert history.epoch == [0, 1, 2]


# -- beyond the brief: Keras's own callbacks, unchanged ----------------------------


def test_keras_lambda_callback_batch_hooks():
    """LambdaCallback sets its hooks as instance attributes, not class overrides."""
    x, y = _data(40)
    calls = []
    cb = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: calls.append(("train", batch)),
        on_batch_end=lambda batch, logs: calls.append(("legacy", batch)),
        on_epoch_end=lambda epoch, logs: calls.append(("epoch", epoch)),
    )
    _model().fit(x, y, batch_size=10, epochs=1, callbacks=[cb], verbose=0)
    assert ("epoch", 0) in calls
    assert [b for kind, b in calls if kind == "train"] == [0, 1, 2, 3]


def test_keras_legacy_on_batch_end_override():
    class Legacy(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batches = []

        def on_batch_end(self, batch, logs=None):
            self.batches.append(batch)

    x, y = _data(40)
    cb = Legacy()
    _model().fit(x, y, batch_size=10, epochs=1, callbacks=[cb], verbose=0)
    assert cb.batches == [0, 1, 2, 3]


def test_keras_early_stopping():
    x, y = _data(40)
    model = _model(optimizer=keras.optimizers.SGD(0.0))  # constant loss: no improvement
    es = keras.callbacks.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    history = model.fit(x, y, batch_size=10, epochs=5, callbacks=[es], verbose=0)
    assert history.epoch == [0, 1]
    assert es.stopped_epoch == 1


def test_keras_terminate_on_nan():
    x, y = _data(40)
    model = _model()
    history = model.fit(
        x,
        y * np.nan,
        batch_size=10,
        epochs=3,
        callbacks=[keras.callbacks.TerminateOnNaN()],
        verbose=0,
    )
    assert _iterations(model) == 1
    assert history.epoch == [0]


def test_keras_learning_rate_scheduler_recorded_in_history():
    """Keras runs History after user callbacks, so logs they add are recorded."""
    x, y = _data(40)
    model = _model()
    lrs = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.01 * (epoch + 1))
    history = model.fit(x, y, batch_size=10, epochs=2, callbacks=[lrs], verbose=0)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.02)
    assert history.history["learning_rate"] == pytest.approx([0.01, 0.02])
