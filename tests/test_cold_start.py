"""What a fresh process pays before its first step: autograph only where user code needs it.

Autograph rewrites every Python function a traced step calls, once per
process; for the engine's own step code (no Python control flow on tensors)
that cost seconds of a newcomer's first `fit()` and built the same graph. The
engine traces its steps without it, and keeps it wherever user code that it
converted before runs inside a step (docs/benchmarks.md, "Cold start").
"""

from __future__ import annotations

import contextlib
import io

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfk_trainer as tfk
from tfk_trainer.engine import build


def _data(n: int = 48):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 4)).astype("float32")
    y = rng.integers(0, 3, size=(n,)).astype("int32")
    return x, y


def _net():
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, "relu"), keras.layers.Dense(3)]
    )


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _autograph_log(fn) -> str:
    """Runs `fn` with autograph's conversion log on (public `tf.autograph.set_verbosity`)."""
    buffer = io.StringIO()
    tf.autograph.set_verbosity(1, alsologtostdout=True)
    try:
        with contextlib.redirect_stdout(buffer):
            fn()
    finally:
        tf.autograph.set_verbosity(0)
    return buffer.getvalue()


def test_a_plain_fit_converts_none_of_the_engine_code():
    x, y = _data()
    model = tfk.Model(_net())
    model.compile("adam", _loss(), metrics=["accuracy"])
    log = _autograph_log(
        lambda: (
            model.fit(x, y, batch_size=16, epochs=1, verbose=0, validation_split=0.25),
            model.evaluate(x, y, batch_size=16, verbose=0),
            model.predict(x, batch_size=16, verbose=0),
        )
    )
    assert build.step_autograph(model) is False
    for name in ("train_step", "test_step", "predict_step", "_loss_terms", "gather"):
        assert f"Converted call: <function {name}" not in log, log
        assert f"Converted call: <bound method Model.{name}" not in log, log
    assert "train_step" not in log and "ArrayAdapter" not in log, log


class _TrainStepOverride(tfk.Model):
    def train_step(self, data):
        return super().train_step(data)


def test_steps_with_and_without_autograph_give_identical_numbers():
    """The same graph either way: an override that only calls super() turns autograph on."""
    x, y = _data()
    weights = []
    for cls in (tfk.Model, _TrainStepOverride):
        model = cls(_net())
        model.compile("adam", _loss(), metrics=["accuracy"])
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        weights.append((model.get_weights(), history.history))
    assert build.step_autograph(tfk.Model(_net())) is False
    assert build.step_autograph(_TrainStepOverride(_net())) is True
    (w_plain, h_plain), (w_converted, h_converted) = weights
    for a, b in zip(w_plain, w_converted):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    for key in h_plain:
        np.testing.assert_allclose(h_plain[key], h_converted[key], rtol=0, atol=1e-6)


# User code with Python control flow on a tensor: it needs autograph, as before.


def _branchy_mse(y_true, y_pred):
    if tf.reduce_max(tf.abs(y_pred)) > 1e9:  # never true: the plain MSE
        return tf.zeros_like(y_pred[:, 0])
    return tf.reduce_mean(tf.square(y_true - y_pred), axis=-1)


class _BranchyMse(keras.losses.Loss):
    def call(self, y_true, y_pred):
        return _branchy_mse(y_true, y_pred)


class _BranchyMean(keras.metrics.Mean):
    def update_state(self, y_true, y_pred, sample_weight=None):
        value = tf.reduce_mean(y_pred)
        if value > 1e9:  # never true
            value = tf.zeros_like(value)
        return super().update_state(value)


class _BranchyComputeLoss(tfk.Model):
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = tf.reduce_mean(tf.square(tf.cast(y, y_pred.dtype) - y_pred))
        if loss > 1e9:  # never true
            loss = tf.zeros_like(loss)
        return loss


class _BranchyModule(tf.Module):
    def __init__(self):
        super().__init__()
        self.dense = _net()

    def __call__(self, x, training=False):
        out = self.dense(x, training=training)
        if tf.reduce_max(tf.abs(out)) > 1e9:  # never true
            out = tf.zeros_like(out)
        return out


def _regression(seed_net: bool = True):
    x, _ = _data()
    y = np.tile(x[:, :1], (1, 3)).astype("float32")
    return x, y


@pytest.mark.parametrize(
    "case", ["loss_function", "loss_class", "metric_class", "compute_loss", "tf_module"]
)
def test_user_code_with_tensor_control_flow_still_converts(case):
    x, y = _regression()
    make = {
        "compute_loss": lambda: _BranchyComputeLoss(_net()),
        "tf_module": lambda: tfk.Model(_BranchyModule()),
    }.get(case, lambda: tfk.Model(_net()))
    loss = {"loss_function": _branchy_mse, "loss_class": _BranchyMse()}.get(case, "mse")
    metrics = [_BranchyMean(name="branchy")] if case == "metric_class" else []
    model = make()
    model.compile("sgd", loss, metrics=metrics)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    assert build.step_autograph(model) is True

    # The same training with the library's MSE and no branch, without autograph.
    reference = tfk.Model(_net())
    reference.compile("sgd", "mse")
    expected = reference.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    assert build.step_autograph(reference) is False
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"], rtol=0, atol=1e-6)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    if case == "metric_class":
        assert np.isfinite(history.history["branchy"]).all()
