"""Standard callbacks (`tfk_trainer.callbacks.standard`) against Keras's own.

Differential tests train the same network (same starting weights, same data,
`shuffle=False`) once with `keras.Model.fit` and Keras's callback, once with
`tfk.Model.fit` and ours, and compare what the callback decides: the
stopping epoch, the learning rate per epoch, the CSV file, the restored
weights, the hook calls. Then the cases Keras has no counterpart for:
CSVLogger appending across runs, NaN termination mid-epoch, argument errors.
"""

from __future__ import annotations

import csv

import keras
import numpy as np
import pytest

import tfk_trainer as tfk
from tfk_trainer.callbacks import CallbackList

FEATURES = 4
RTOL = 1e-4
ATOL = 1e-5


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype("float32")
    w = np.array([[1.0], [-2.0], [0.5], [0.0]], "float32")
    y = x @ w + rng.normal(scale=1.0, size=(n, 1)).astype("float32")
    return x, y.astype("float32")


TRAIN = _data(24, 1)
VAL = _data(32, 2)


def _net() -> keras.Model:
    rng = np.random.default_rng(0)
    net = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    net.set_weights(
        [rng.normal(scale=0.5, size=w.shape).astype("float32") for w in net.get_weights()]
    )
    return net


def _pair(optimizer=lambda: keras.optimizers.Adam(0.05), **compile_kwargs):
    """(keras model, tfk model, tfk's network), compiled alike, same weights."""
    kwargs = {"loss": "mse", "metrics": ["mae"], **compile_kwargs}
    reference = _net()
    reference.compile(optimizer=optimizer(), **kwargs)
    net = _net()
    ours = tfk.Model(net)
    ours.compile(optimizer=optimizer(), **kwargs)
    return reference, ours, net


def _fit_both(reference_cb, our_cb, *, epochs, validation=True, optimizer=None, **fit_kwargs):
    pair_kwargs = {} if optimizer is None else {"optimizer": optimizer}
    reference, ours, net = _pair(**pair_kwargs)
    kwargs = {"batch_size": 8, "epochs": epochs, "shuffle": False, "verbose": 0, **fit_kwargs}
    if validation:
        kwargs["validation_data"] = VAL
    x, y = TRAIN
    ref_history = reference.fit(x, y, callbacks=[reference_cb], **kwargs)
    our_history = ours.fit(x, y, callbacks=[our_cb], **kwargs)
    return (reference, ref_history), (ours, our_history, net)


# -- EarlyStopping ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        # val_loss bottoms out at epoch 4: stop at 6, restore epoch 4's weights.
        dict(monitor="val_loss", patience=2, restore_best_weights=True),
        # Improvements smaller than min_delta do not count (no validation needed).
        dict(monitor="loss", min_delta=0.1, patience=1),
        # A baseline never beaten: stops after `patience` epochs from start_from_epoch,
        # restoring the best epoch of those.
        dict(
            monitor="val_mae",
            baseline=0.1,
            patience=3,
            start_from_epoch=2,
            restore_best_weights=True,
        ),
    ],
    ids=["restore", "min_delta", "baseline"],
)
def test_early_stopping_matches_keras(kwargs):
    ref_cb = keras.callbacks.EarlyStopping(**kwargs)
    our_cb = tfk.callbacks.EarlyStopping(**kwargs)
    validation = kwargs["monitor"].startswith("val_")
    (reference, ref_history), (_, our_history, net) = _fit_both(
        ref_cb, our_cb, epochs=12, validation=validation
    )
    assert 0 < ref_cb.stopped_epoch < 11  # the case stops early
    assert our_history.epoch == ref_history.epoch
    assert our_cb.stopped_epoch == ref_cb.stopped_epoch
    assert our_cb.best_epoch == ref_cb.best_epoch
    assert our_cb.wait == ref_cb.wait
    np.testing.assert_allclose(our_cb.best, ref_cb.best, rtol=RTOL, atol=ATOL)
    for ours, theirs in zip(net.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)


def test_early_stopping_restores_best_weights_without_stopping():
    """Keras 3 restores the best weights at the end even when patience never ran out."""
    kwargs = dict(monitor="val_loss", patience=50, restore_best_weights=True)
    ref_cb = keras.callbacks.EarlyStopping(**kwargs)
    our_cb = tfk.callbacks.EarlyStopping(**kwargs)
    (reference, ref_history), (_, our_history, net) = _fit_both(ref_cb, our_cb, epochs=6)
    assert our_history.epoch == ref_history.epoch == list(range(6))
    assert our_cb.stopped_epoch == 0 and our_cb.best_epoch == ref_cb.best_epoch == 4
    for ours, theirs in zip(net.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)


def test_early_stopping_auto_mode_direction():
    """ "auto" maximises accuracy-like metrics and minimises losses, like Keras."""
    x = TRAIN[0]
    y = (TRAIN[1] > 0).astype("float32")
    monitors = ("val_accuracy", "loss", "val_mae")
    fit = dict(epochs=1, validation_data=(x, y), verbose=0, shuffle=False)
    ours = tfk.Model(_net())
    ours.compile(optimizer="sgd", loss="mse", metrics=["accuracy", "mae"])
    our_cbs = [tfk.callbacks.EarlyStopping(monitor=m) for m in monitors]
    ours.fit(x, y, callbacks=our_cbs, **fit)
    reference = _net()
    reference.compile(optimizer="sgd", loss="mse", metrics=["accuracy", "mae"])
    ref_cbs = [keras.callbacks.EarlyStopping(monitor=m) for m in monitors]
    reference.fit(x, y, callbacks=ref_cbs, **fit)
    resolved = {m: cb.monitor_op.__name__ for m, cb in zip(monitors, our_cbs)}
    assert resolved == {m: cb.monitor_op.__name__ for m, cb in zip(monitors, ref_cbs)}
    assert resolved == {"val_accuracy": "greater", "loss": "less", "val_mae": "less"}


def test_early_stopping_missing_key_warns_with_available_keys():
    model = tfk.Model(_net())
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    cb = tfk.callbacks.EarlyStopping(monitor="val_loss", patience=0)
    with pytest.warns(UserWarning, match=r"`val_loss` which is not available.*loss,mae"):
        history = model.fit(*TRAIN, epochs=2, callbacks=[cb], verbose=0)
    assert history.epoch == [0, 1]  # nothing monitored, nothing stopped


# -- ReduceLROnPlateau -----------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(monitor="val_loss", factor=0.5, patience=1),
        dict(monitor="loss", factor=0.2, patience=0, min_delta=0.05, cooldown=2, min_lr=0.002),
    ],
    ids=["val_loss", "cooldown_min_lr"],
)
def test_reduce_lr_on_plateau_matches_keras(kwargs):
    ref_cb = keras.callbacks.ReduceLROnPlateau(**kwargs)
    our_cb = tfk.callbacks.ReduceLROnPlateau(**kwargs)
    validation = kwargs["monitor"].startswith("val_")
    (reference, ref_history), (ours, our_history, net) = _fit_both(
        ref_cb,
        our_cb,
        epochs=10,
        validation=validation,
        optimizer=lambda: keras.optimizers.Adam(0.3),
    )
    ref_lrs = ref_history.history["learning_rate"]
    assert len(set(ref_lrs)) > 2  # the case reduces more than once
    assert our_history.history["learning_rate"] == ref_lrs
    assert float(ours.optimizer.learning_rate.numpy()) == float(
        reference.optimizer.learning_rate.numpy()
    )
    for key in ("loss", "val_loss") if validation else ("loss",):
        np.testing.assert_allclose(
            our_history.history[key], ref_history.history[key], rtol=RTOL, atol=ATOL
        )
    assert our_cb.cooldown_counter == ref_cb.cooldown_counter
    assert our_cb.wait == ref_cb.wait


# -- LearningRateScheduler -------------------------------------------------------


@pytest.mark.parametrize(
    "schedule",
    [
        lambda epoch, lr: lr if epoch < 2 else lr * 0.5,
        lambda epoch: 0.1 / (epoch + 1),
    ],
    ids=["epoch_lr", "epoch_only"],
)
def test_learning_rate_scheduler_matches_keras(schedule):
    ref_cb = keras.callbacks.LearningRateScheduler(schedule)
    our_cb = tfk.callbacks.LearningRateScheduler(schedule)
    (reference, ref_history), (ours, our_history, net) = _fit_both(
        ref_cb, our_cb, epochs=5, validation=False
    )
    assert our_history.history["learning_rate"] == ref_history.history["learning_rate"]
    assert list(our_history.history) == list(ref_history.history)
    np.testing.assert_allclose(
        our_history.history["loss"], ref_history.history["loss"], rtol=RTOL, atol=ATOL
    )
    for ours_w, theirs in zip(net.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(ours_w, theirs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "make",
    [
        lambda: tfk.callbacks.LearningRateScheduler(lambda epoch, lr: lr),
        lambda: tfk.callbacks.ReduceLROnPlateau(monitor="loss"),
    ],
    ids=["scheduler", "plateau"],
)
def test_schedule_optimizer_is_rejected_before_training(make):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.9)
    model = tfk.Model(_net())
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse")
    with pytest.raises(TypeError, match="ExponentialDecay.*not settable"):
        model.fit(*TRAIN, epochs=1, callbacks=[make()], verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 0


def test_learning_rate_scheduler_type_error_inside_schedule_surfaces():
    """Keras retries `schedule(epoch)` on any TypeError; we call the declared form."""

    def schedule(epoch, lr):
        raise TypeError("bug in my schedule")

    model = tfk.Model(_net())
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(TypeError, match="bug in my schedule"):
        model.fit(
            *TRAIN,
            epochs=1,
            callbacks=[tfk.callbacks.LearningRateScheduler(schedule)],
            verbose=0,
        )


# -- CSVLogger -------------------------------------------------------------------


def _read_csv(path, separator=","):
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter=separator))
    return rows[0], rows[1:]


def _assert_same_rows(ours, theirs):
    assert len(ours) == len(theirs)
    for our_row, their_row in zip(ours, theirs):
        assert len(our_row) == len(their_row)
        for a, b in zip(our_row, their_row):
            if b == "NA" or a == "NA":
                assert a == b
            else:
                np.testing.assert_allclose(float(a), float(b), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "validation, separator", [(True, ","), (False, ";")], ids=["val", "no_val"]
)
def test_csv_logger_matches_keras(tmp_path, validation, separator):
    ref_path, our_path = tmp_path / "keras.csv", tmp_path / "ours.csv"
    ref_cb = keras.callbacks.CSVLogger(str(ref_path), separator=separator)
    our_cb = tfk.callbacks.CSVLogger(our_path, separator=separator)
    _fit_both(ref_cb, our_cb, epochs=3, validation=validation)
    ref_header, ref_rows = _read_csv(ref_path, separator)
    our_header, our_rows = _read_csv(our_path, separator)
    assert our_header == ref_header
    if not validation:  # Keras's quirk: val_ twins of every key, filled with NA
        assert our_header == ["epoch", "loss", "mae", "val_loss", "val_mae"]
    _assert_same_rows(our_rows, ref_rows)
    assert [r[0] for r in our_rows] == ["0", "1", "2"]
    # Byte for byte the same layout: line terminators, quoting.
    assert our_path.read_bytes().count(b"\r\n") == ref_path.read_bytes().count(b"\r\n") == 4


def test_csv_logger_records_learning_rate_from_earlier_callback(tmp_path):
    """Callbacks run in order: a scheduler before the logger adds a column."""
    path = tmp_path / "log.csv"
    model = tfk.Model(_net())
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    callbacks = [
        tfk.callbacks.LearningRateScheduler(lambda epoch: 0.01 * (epoch + 1)),
        tfk.callbacks.CSVLogger(path),
    ]
    model.fit(*TRAIN, epochs=2, callbacks=callbacks, verbose=0)
    header, rows = _read_csv(path)
    assert header == ["epoch", "learning_rate", "loss", "val_learning_rate", "val_loss"]
    np.testing.assert_allclose([float(r[1]) for r in rows], [0.01, 0.02], rtol=1e-6, atol=ATOL)


def test_csv_logger_append_resumes_without_second_header(tmp_path):
    path = tmp_path / "log.csv"
    model = tfk.Model(_net())
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x, y = TRAIN
    model.fit(x, y, epochs=2, callbacks=[tfk.callbacks.CSVLogger(path, append=True)], verbose=0)
    # A fresh callback (a resumed process) appending to the same file.
    model.fit(
        x,
        y,
        epochs=4,
        initial_epoch=2,
        callbacks=[tfk.callbacks.CSVLogger(path, append=True)],
        verbose=0,
    )
    header, rows = _read_csv(path)
    assert header == ["epoch", "loss", "val_loss"]
    assert [r[0] for r in rows] == ["0", "1", "2", "3"]
    assert all(r[2] == "NA" for r in rows)
    # append=False starts over.
    model.fit(x, y, epochs=1, callbacks=[tfk.callbacks.CSVLogger(path)], verbose=0)
    header, rows = _read_csv(path)
    assert header == ["epoch", "loss", "val_loss"] and len(rows) == 1


def test_csv_logger_append_to_empty_file_writes_header(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("")
    model = tfk.Model(_net())
    model.compile(optimizer="sgd", loss="mse")
    cb = tfk.callbacks.CSVLogger(path, append=True)
    model.fit(*TRAIN, epochs=1, callbacks=[cb], verbose=0)
    header, rows = _read_csv(path)
    assert header == ["epoch", "loss", "val_loss"] and len(rows) == 1


def test_csv_logger_append_with_different_columns_warns(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("epoch,loss,mae\r\n0,1.0,1.0\r\n")
    model = tfk.Model(_net())
    model.compile(optimizer="sgd", loss="mse")
    with pytest.warns(UserWarning, match="differs from this run's columns"):
        model.fit(
            *TRAIN,
            epochs=1,
            callbacks=[tfk.callbacks.CSVLogger(path, append=True)],
            verbose=0,
        )


# -- TerminateOnNaN --------------------------------------------------------------


def test_terminate_on_nan_matches_keras_when_loss_diverges(capsys):
    """A huge learning rate: the loss overflows after a few batches of epoch 0."""
    x, y = _data(128, 3)
    results = []
    for make, cb in (
        (lambda net: net, keras.callbacks.TerminateOnNaN()),
        (tfk.Model, tfk.callbacks.TerminateOnNaN()),
    ):
        model = make(_net())
        model.compile(optimizer=keras.optimizers.SGD(1e4), loss="mse")
        history = model.fit(x, y, batch_size=8, epochs=3, callbacks=[cb], shuffle=False, verbose=0)
        results.append((int(model.optimizer.iterations.numpy()), history.epoch))
    assert results[1] == results[0]
    iterations, epochs = results[1]
    assert epochs == [0] and 1 < iterations < 16  # stopped inside the first epoch
    assert f"Batch {iterations - 1}: Invalid loss, terminating training" in capsys.readouterr().out


def test_terminate_on_nan_with_steps_per_execution():
    """Checked after each execution: training stops at the end of the first one."""
    x, y = _data(64, 3)
    y[0, 0] = np.inf
    model = tfk.Model(_net())
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=2)
    history = model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        shuffle=False,
        callbacks=[tfk.callbacks.TerminateOnNaN()],
        verbose=0,
    )
    assert int(model.optimizer.iterations.numpy()) == 2
    assert history.epoch == [0] and not np.isfinite(history.history["loss"][0])


def test_terminate_on_nan_raise_error():
    x, y = _data(16, 3)
    y[:] = np.nan
    model = tfk.Model(_net())
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(RuntimeError, match="NaN or Inf loss encountered at batch 0"):
        model.fit(
            x,
            y,
            batch_size=8,
            shuffle=False,
            callbacks=[tfk.callbacks.TerminateOnNaN(raise_error=True)],
            verbose=0,
        )


# -- LambdaCallback --------------------------------------------------------------


def _recording_lambda(cls, events):
    return cls(
        on_epoch_begin=lambda epoch, logs: events.append(("epoch_begin", epoch)),
        on_epoch_end=lambda epoch, logs: events.append(("epoch_end", epoch, sorted(logs))),
        on_train_begin=lambda logs: events.append(("train_begin",)),
        on_train_end=lambda logs: events.append(("train_end",)),
        on_train_batch_begin=lambda batch, logs: events.append(("batch_begin", batch)),
        on_train_batch_end=lambda batch, logs: events.append(("batch_end", batch, sorted(logs))),
        on_test_begin=lambda logs: events.append(("test_begin",)),
        on_test_end=lambda logs: events.append(("test_end", sorted(logs))),
    )


def test_lambda_callback_matches_keras():
    ref_events, our_events = [], []
    _fit_both(
        _recording_lambda(keras.callbacks.LambdaCallback, ref_events),
        _recording_lambda(tfk.callbacks.LambdaCallback, our_events),
        epochs=2,
    )
    assert our_events == ref_events
    batches = [e[1] for e in our_events if e[0] == "batch_end"]
    assert batches == [0, 1, 2] * 2
    assert our_events[0] == ("train_begin",) and our_events[-1] == ("train_end",)


def test_lambda_callback_legacy_batch_hook_and_dispatch():
    calls = []
    legacy = tfk.callbacks.LambdaCallback(on_batch_end=lambda batch, logs: calls.append(batch))
    epoch_only = tfk.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: None)
    model = tfk.Model(_net())
    model.compile(optimizer="sgd", loss="mse")
    model.fit(*TRAIN, batch_size=8, epochs=1, callbacks=[legacy, epoch_only], verbose=0)
    assert calls == [0, 1, 2]
    # Only the hooks given are set: an epoch-only LambdaCallback is no batch reader.
    assert not CallbackList([epoch_only], model=None, params={}).wants_batch("on_train_batch_end")
    assert CallbackList([legacy], model=None, params={}).wants_batch("on_train_batch_end")
    assert "on_train_batch_end" not in vars(legacy) and "on_batch_end" in vars(legacy)


def test_epoch_level_callbacks_are_not_batch_readers(tmp_path):
    """Only TerminateOnNaN reads batch logs, so the others never sync per execution."""
    epoch_level = [
        tfk.callbacks.EarlyStopping(),
        tfk.callbacks.ReduceLROnPlateau(),
        tfk.callbacks.LearningRateScheduler(lambda epoch, lr: lr),
        tfk.callbacks.CSVLogger(tmp_path / "log.csv"),
    ]
    callbacks = CallbackList(epoch_level, model=None, params={})
    assert not any(callbacks.wants_batch(h) for h in ("on_train_batch_end", "on_test_batch_end"))
    nan = CallbackList([tfk.callbacks.TerminateOnNaN()], model=None, params={})
    assert nan.wants_batch("on_train_batch_end") and not nan.wants_batch("on_test_batch_end")


# -- argument validation ---------------------------------------------------------


@pytest.mark.parametrize(
    "factory, error, match",
    [
        (lambda: tfk.callbacks.EarlyStopping(patience=-1), ValueError, "patience"),
        (lambda: tfk.callbacks.EarlyStopping(patience=1.5), TypeError, "patience"),
        (lambda: tfk.callbacks.EarlyStopping(mode="maximum"), ValueError, "mode"),
        (lambda: tfk.callbacks.EarlyStopping(start_from_epoch=-2), ValueError, "start_from_epoch"),
        (lambda: tfk.callbacks.EarlyStopping(monitor=3), TypeError, "monitor"),
        (lambda: tfk.callbacks.EarlyStopping(baseline="0.5"), TypeError, "baseline"),
        (lambda: tfk.callbacks.EarlyStopping(min_delta=None), TypeError, "min_delta"),
        (lambda: tfk.callbacks.ReduceLROnPlateau(factor=1.0), ValueError, "factor"),
        (lambda: tfk.callbacks.ReduceLROnPlateau(factor=-0.5), ValueError, "factor"),
        (lambda: tfk.callbacks.ReduceLROnPlateau(patience=-1), ValueError, "patience"),
        (lambda: tfk.callbacks.ReduceLROnPlateau(cooldown=-1), ValueError, "cooldown"),
        (lambda: tfk.callbacks.ReduceLROnPlateau(min_lr=-1e-3), ValueError, "min_lr"),
        (lambda: tfk.callbacks.ReduceLROnPlateau(mode="up"), ValueError, "mode"),
        (lambda: tfk.callbacks.LearningRateScheduler(0.1), TypeError, "schedule"),
        (lambda: tfk.callbacks.CSVLogger(None), TypeError, "filename"),
        (lambda: tfk.callbacks.CSVLogger("x.csv", separator=", "), ValueError, "separator"),
        (lambda: tfk.callbacks.TerminateOnNaN(raise_error="yes"), TypeError, "raise_error"),
        (lambda: tfk.callbacks.LambdaCallback(on_epoch_ends=print), TypeError, "on_epoch_ends"),
        (lambda: tfk.callbacks.LambdaCallback(on_epoch_end=1), TypeError, "on_epoch_end"),
    ],
)
def test_argument_validation(factory, error, match):
    with pytest.raises(error, match=match):
        factory()


def test_schedule_output_validation():
    model = tfk.Model(_net())
    model.compile(optimizer="sgd", loss="mse")
    cb = tfk.callbacks.LearningRateScheduler(lambda epoch: "fast")
    with pytest.raises(ValueError, match="should be a float"):
        model.fit(*TRAIN, epochs=1, callbacks=[cb], verbose=0)


def test_auto_mode_unknown_metric_raises():
    model = tfk.Model(_net())
    model.compile(optimizer="sgd", loss="mse")
    cb = tfk.callbacks.EarlyStopping(monitor="val_wiggle")
    with pytest.raises(ValueError, match="mode='max'"):
        model.fit(*TRAIN, epochs=1, validation_data=VAL, callbacks=[cb], verbose=0)


def test_verbose_messages(capsys):
    model = tfk.Model(_net())
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # constant loss
    cbs = [
        tfk.callbacks.EarlyStopping(
            monitor="loss", patience=1, verbose=1, restore_best_weights=True
        ),
        tfk.callbacks.ReduceLROnPlateau(monitor="loss", patience=0, verbose=1, min_lr=0.0),
    ]
    model.fit(*TRAIN, epochs=5, callbacks=cbs, verbose=0)
    out = capsys.readouterr().out
    assert "Epoch 2: early stopping" in out
    assert "Restoring model weights from the end of the best epoch: 1." in out
    assert "ReduceLROnPlateau reducing learning rate to" not in out  # lr 0 <= min_lr
