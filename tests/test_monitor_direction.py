"""One `mode="auto"` rule for every monitor callback (`callbacks/monitor.py`).

For each monitored key, tfk's `EarlyStopping`, `ReduceLROnPlateau` and
`ModelCheckpoint(save_best_only=True)`, and Keras's own `EarlyStopping` run
in a tfk `fit`, resolve the same direction, and it is the direction Keras's
`EarlyStopping` resolves in `keras.Model.fit` on the same network and
metrics. Where Keras cannot tell (a custom metric function), every callback
raises a `ValueError` asking for `mode`.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfk_trainer as tfk
from tfk_trainer.callbacks.monitor import monitor_direction

FEATURES = 3


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype("float32")
    y = (x[:, :1] + 0.3 * rng.normal(size=(n, 1)) > 0).astype("float32")
    return x, y


TRAIN = _data(16, 1)
VAL = _data(8, 2)


def score(y_true, y_pred):
    """A custom metric function: no declared direction, no telling name."""
    return keras.ops.mean(y_pred, axis=-1)


def _metrics() -> list:
    return [
        keras.metrics.BinaryIoU(name="iou"),
        keras.metrics.AUC(name="auc"),
        "accuracy",
        "acc",
        keras.metrics.BinaryAccuracy(name="binary_accuracy"),
        "mae",
        keras.metrics.Precision(name="precision"),
        keras.metrics.Recall(name="recall"),
        score,
    ]


def _net() -> keras.Model:
    keras.utils.set_random_seed(4)
    return keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(1, activation="sigmoid")])


# The key, and what Keras 3's EarlyStopping resolves it to (None: it raises).
KEYS = {
    "val_iou": "max",
    "iou": "max",
    "auc": "max",
    "val_auc": "max",
    "accuracy": "max",
    "acc": "max",
    "binary_accuracy": "max",
    "val_binary_accuracy": "max",
    "mae": "min",
    "val_mae": "min",
    "loss": "min",
    "val_loss": "min",
    "precision": "max",
    "val_recall": "max",
    "score": None,
    "val_score": None,
}


def _keras_direction(monitor: str) -> str | None:
    """What keras.callbacks.EarlyStopping decides in keras.Model.fit."""
    model = _net()
    model.compile("sgd", "binary_crossentropy", metrics=_metrics())
    callback = keras.callbacks.EarlyStopping(monitor=monitor, patience=5)
    try:
        model.fit(
            *TRAIN, validation_data=VAL, epochs=1, batch_size=8, verbose=0, callbacks=[callback]
        )
    except ValueError as e:
        assert "maximized or minimized" in str(e)
        return None
    assert callback.monitor_op in (keras.ops.greater, keras.ops.less)
    return "max" if callback.monitor_op is keras.ops.greater else "min"


def _tfk_model() -> tfk.Model:
    model = tfk.Model(_net())
    model.compile("sgd", "binary_crossentropy", metrics=_metrics())
    return model


def _tfk_callbacks(monitor: str, tmp_path) -> list:
    return [
        tfk.callbacks.EarlyStopping(monitor=monitor, patience=5),
        tfk.callbacks.ReduceLROnPlateau(monitor=monitor, patience=5),
        tfk.callbacks.ModelCheckpoint(
            str(tmp_path / "best_ckpt"), monitor=monitor, save_best_only=True
        ),
        keras.callbacks.EarlyStopping(monitor=monitor, patience=5),
    ]


def _resolved(callback) -> str:
    if isinstance(callback, tfk.callbacks.ModelCheckpoint):
        return callback.mode
    op = callback.monitor_op
    assert op in (np.greater, np.less, keras.ops.greater, keras.ops.less)
    return "max" if op in (np.greater, keras.ops.greater) else "min"


def _fit(model: tfk.Model, callbacks: list) -> None:
    model.fit(*TRAIN, validation_data=VAL, epochs=1, batch_size=8, verbose=0, callbacks=callbacks)


@pytest.mark.parametrize("monitor", sorted(KEYS))
def test_every_monitor_callback_agrees_with_keras(monitor, tmp_path):
    expected = KEYS[monitor]
    assert _keras_direction(monitor) == expected
    model = _tfk_model()
    if expected is None:
        for callback in _tfk_callbacks(monitor, tmp_path):
            with pytest.raises(ValueError, match="maximized or minimized"):
                _fit(model, [callback])
        return
    callbacks = _tfk_callbacks(monitor, tmp_path)
    _fit(model, callbacks)
    assert [_resolved(cb) for cb in callbacks] == [expected] * len(callbacks)
    assert monitor_direction(monitor, model) == expected


def test_names_decide_where_no_metric_object_tells():
    # tfk's extension of Keras's rule: a key with no metric object behind it
    # (logged by a callback, a custom function) is placed by its name.
    assert monitor_direction("val_iou", None) == "max"
    assert monitor_direction("val_f1_score", None) == "max"
    assert monitor_direction("val_sparse_categorical_accuracy", None) == "max"
    assert monitor_direction("val_mean_absolute_error", None) == "min"
    assert monitor_direction("val_reconstruction_loss", None) == "min"
    assert monitor_direction("val_score", None) is None


def test_model_checkpoint_keeps_the_best_val_iou(tmp_path):
    # ModelCheckpoint minimised `val_iou` while EarlyStopping maximised it.
    model = _tfk_model()
    checkpoint = tfk.callbacks.ModelCheckpoint(
        str(tmp_path / "ckpt"), monitor="val_iou", save_best_only=True
    )
    _fit(model, [checkpoint])
    assert checkpoint.mode == "max"
    first = checkpoint.best
    assert first is not None and np.isfinite(first)
    for value, saved in ((first - 0.1, False), (first + 0.1, True)):
        assert checkpoint._improved(value) is saved
