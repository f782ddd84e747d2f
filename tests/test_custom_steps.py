"""Keras's override points on `tfk.Model` subclasses.

`compute_loss`, `compute_metrics`, `train_step`, `test_step` and
`predict_step` overrides take effect; a `compute_loss` that returns a plain
local mean trains the same under MirroredStrategy as on one device (the
engine weights it by the replica's share of the batch, where Keras would
multiply the gradient by the number of replicas); `add_loss` losses from a
custom layer join the reported loss exactly as in `keras.Model.fit`.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from tolerances import ATOL, ATOL_MULTI, RTOL

import tfk_trainer as tfk

# -- data, networks, helpers ------------------------------------------------------------


def regression_data(n: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (np.sin(x[:, :1]) + 0.5 * x[:, 1:2] - 0.25 * x[:, 2:3] ** 2).astype("float32")
    return x, y


def regressor() -> keras.Model:
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
    )


def start_weights(seed: int = 7) -> list:
    keras.utils.set_random_seed(seed)
    return regressor().get_weights()


def sgd():
    return keras.optimizers.SGD(learning_rate=0.1, momentum=0.5)


def build(cls, start, strategy=None, **compile_kwargs):
    """`cls(net)` on a regressor with weights `start`, compiled under `strategy`."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        net = regressor()
        net.set_weights(start)
        model = cls(net)
        model.compile(**{"optimizer": sgd(), "loss": "mse", **compile_kwargs})
    return model


def assert_weights_close(got: list, expected: list, atol: float = ATOL) -> None:
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=atol, err_msg=f"weight {i}")


def assert_history_close(got, expected, atol: float = ATOL) -> None:
    assert list(got.history) == list(expected.history)
    for key, values in expected.history.items():
        np.testing.assert_allclose(got.history[key], values, rtol=RTOL, atol=atol, err_msg=key)


# 69 samples, batch 16: four full batches and one of 5, which two replicas split 3/2.
FIT = dict(batch_size=16, epochs=2, shuffle=False, verbose=0)

# -- a/b. compute_loss overrides -----------------------------------------------------------


class PlainMeanLoss(tfk.Model):
    """Returns this replica's plain mean, ignoring distribution entirely."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return tf.reduce_mean(tf.square(y - y_pred))


class SuperPlusZero(tfk.Model):
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )
        return loss + 0.0


def test_plain_mean_compute_loss_matches_default_and_replicas(mirrored_strategy):
    x, y = regression_data(n=69)
    start = start_weights()
    default = build(tfk.Model, start)
    default_hist = default.fit(x, y, **FIT)

    single = build(PlainMeanLoss, start)
    single_hist = single.fit(x, y, **FIT)
    assert_weights_close(single.get_weights(), default.get_weights())
    assert_history_close(single_hist, default_hist)

    multi = build(PlainMeanLoss, start, mirrored_strategy(2))
    assert multi.distribute_strategy.num_replicas_in_sync == 2
    multi_hist = multi.fit(x, y, **FIT)
    # Not twice the gradient: the same weights and loss logs as on one device.
    assert_weights_close(multi.get_weights(), default.get_weights(), ATOL_MULTI)
    assert_history_close(multi_hist, default_hist, ATOL_MULTI)
    got = multi.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    expected = default.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    np.testing.assert_allclose(got["loss"], expected["loss"], rtol=RTOL, atol=ATOL_MULTI)


@pytest.mark.parametrize("replicas", [1, 2])
def test_super_compute_loss_plus_zero_is_unchanged(mirrored_strategy, replicas):
    x, y = regression_data(n=69)
    start = start_weights()
    strategy = mirrored_strategy(replicas) if replicas > 1 else None
    default = build(tfk.Model, start, strategy, metrics=["mae"])
    default_hist = default.fit(x, y, **FIT)
    model = build(SuperPlusZero, start, strategy, metrics=["mae"])
    hist = model.fit(x, y, **FIT)
    assert_weights_close(model.get_weights(), default.get_weights(), ATOL_MULTI)
    assert_history_close(hist, default_hist, ATOL_MULTI)
    got = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    expected = default.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert sorted(got) == sorted(expected) == ["loss", "mae"]
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=RTOL, atol=ATOL_MULTI)


# -- c. custom train_step / test_step / predict_step ---------------------------------------


def custom_train_step(self, data):
    """Keras's "customizing fit" pattern, verbatim for tfk and Keras."""
    x, y = data
    with tf.GradientTape() as tape:
        y_pred = self(x, training=True)
        loss = self.compute_loss(x=x, y=y, y_pred=y_pred)
    grads = tape.gradient(loss, self.trainable_variables)
    self.optimizer.apply(grads, self.trainable_variables)
    for metric in self.metrics:
        if metric.name in ("loss", "my_loss"):
            metric.update_state(loss)
        else:
            metric.update_state(y, y_pred)
    return {m.name: m.result() for m in self.metrics}


class CustomTrainStep(tfk.Model):
    def __init__(self, network):
        super().__init__(network)
        self.my_loss = keras.metrics.Mean(name="my_loss")

    train_step = custom_train_step


class KerasCustomTrainStep(keras.Model):
    def __init__(self, network):
        super().__init__()
        self.network = network
        self.my_loss = keras.metrics.Mean(name="my_loss")

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    train_step = custom_train_step


def test_custom_train_step_matches_keras():
    x, y = regression_data(n=64)
    start = start_weights()
    model = build(CustomTrainStep, start, metrics=["mae"])
    hist = model.fit(x, y, **FIT)
    assert "my_loss" in hist.history
    assert set(hist.history) == {"loss", "mae", "my_loss"}

    net = regressor()
    net.set_weights(start)
    ref = KerasCustomTrainStep(net)
    ref.compile(optimizer=sgd(), loss="mse", metrics=["mae"])
    ref_hist = ref.fit(x, y, **FIT)
    np.testing.assert_allclose(hist.history["my_loss"], ref_hist.history["my_loss"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(hist.history["loss"], ref_hist.history["loss"], rtol=RTOL, atol=ATOL)
    assert_weights_close(model.network.get_weights(), net.get_weights())
    # Plain per-batch means of equal batches: the epoch mean of the batch losses.
    assert hist.history["my_loss"][1] < hist.history["my_loss"][0]


def test_custom_train_step_mirrored_matches_single_device(mirrored_strategy):
    x, y = regression_data(n=64)
    start = start_weights()
    single = build(CustomTrainStep, start)
    single.fit(x, y, **FIT)
    multi = build(CustomTrainStep, start, mirrored_strategy(2))
    hist = multi.fit(x, y, **FIT)
    assert "my_loss" in hist.history
    assert_weights_close(multi.get_weights(), single.get_weights(), ATOL_MULTI)


class CustomTestAndPredict(tfk.Model):
    def __init__(self, network):
        super().__init__(network)
        self.my_loss = keras.metrics.Mean(name="my_loss")

    def test_step(self, data):
        x, y = data
        y_pred = self(x, training=False)
        # A distinctive value: the mean absolute error, not the compiled mse.
        self.my_loss.update_state(tf.reduce_mean(tf.abs(y - y_pred)))
        return {"my_loss": self.my_loss.result()}

    def predict_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        return self(x, training=False) * 2.0


def test_custom_test_step_and_predict_step():
    x, y = regression_data(n=64)
    model = build(CustomTestAndPredict, start_weights())
    logs = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    plain = model.network.predict(x, batch_size=16, verbose=0)
    np.testing.assert_allclose(logs["my_loss"], np.mean(np.abs(y - plain)), rtol=RTOL, atol=ATOL)
    pred = model.predict(x, batch_size=16, verbose=0)
    np.testing.assert_allclose(pred, 2.0 * plain, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(model.predict_on_batch(x[:5]), 2.0 * plain[:5], rtol=RTOL, atol=ATOL)
    # fit still uses the default train_step; its validation uses the custom test_step.
    hist = model.fit(x, y, validation_data=(x, y), **FIT)
    assert "val_my_loss" in hist.history
    after = model.network.predict(x, batch_size=16, verbose=0)
    np.testing.assert_allclose(
        hist.history["val_my_loss"][-1], np.mean(np.abs(y - after)), rtol=RTOL, atol=ATOL
    )


class TinyGAN(tfk.Model):
    """Two networks, two optimizers: `self.optimizer` for the discriminator."""

    def __init__(self):
        super().__init__()
        self.generator = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(6)]
        )
        self.discriminator = keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
        )
        self.g_optimizer = keras.optimizers.Adam(0.01)
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_loss = keras.metrics.Mean(name="d_loss")
        self.g_loss = keras.metrics.Mean(name="g_loss")

    def call(self, inputs, training=False):
        return self.discriminator(inputs, training=training)

    def train_step(self, data):
        real = data[0] if isinstance(data, tuple) else data
        batch = tf.shape(real)[0]
        bce = keras.losses.BinaryCrossentropy(from_logits=True)
        noise = tf.random.normal([batch, 4])
        with tf.GradientTape() as tape:
            fake = self.generator(noise, training=True)
            logits = tf.concat([self.discriminator(real), self.discriminator(fake)], 0)
            labels = tf.concat([tf.ones([batch, 1]), tf.zeros([batch, 1])], 0)
            d_loss = bce(labels, logits)
        d_vars = self.discriminator.trainable_variables
        self.optimizer.apply(tape.gradient(d_loss, d_vars), d_vars)
        with tf.GradientTape() as tape:
            fake = self.generator(noise, training=True)
            g_loss = bce(tf.ones([batch, 1]), self.discriminator(fake))
        g_vars = self.generator.trainable_variables
        self.g_optimizer.apply(tape.gradient(g_loss, g_vars), g_vars)
        self.d_loss.update_state(d_loss)
        self.g_loss.update_state(g_loss)
        return {"d_loss": self.d_loss.result(), "g_loss": self.g_loss.result()}


def test_gan_style_train_step_without_compiled_loss():
    x, _ = regression_data(n=64)
    model = TinyGAN()
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    g_before = [w.copy() for w in model.generator.get_weights()]
    d_before = [w.copy() for w in model.discriminator.get_weights()]
    hist = model.fit(x, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert {"d_loss", "g_loss"} <= set(hist.history)
    assert all(np.isfinite(v) for k in ("d_loss", "g_loss") for v in hist.history[k])
    for before, net in ((g_before, model.generator), (d_before, model.discriminator)):
        assert any(not np.array_equal(b, a) for b, a in zip(before, net.get_weights()))


# -- d. compute_metrics override -----------------------------------------------------------


class CountingMetrics(tfk.Model):
    def __init__(self, network):
        super().__init__(network)
        self.calls = keras.metrics.Sum(name="calls")

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        self.calls.update_state(1.0)
        return super().compute_metrics(x, y, y_pred, sample_weight)


def test_compute_metrics_override_is_called():
    x, y = regression_data(n=64)
    start = start_weights()
    default = build(tfk.Model, start, metrics=["mae"])
    default_hist = default.fit(x, y, **FIT)
    model = build(CountingMetrics, start, metrics=["mae"])
    hist = model.fit(x, y, **FIT)
    # Called once per step (4 per epoch), and super() still updates "mae".
    assert hist.history["calls"] == [4.0, 4.0]
    np.testing.assert_allclose(hist.history["mae"], default_hist.history["mae"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(hist.history["loss"], default_hist.history["loss"], rtol=RTOL, atol=ATOL)
    logs = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert logs["calls"] == 2.0


# -- e. add_loss in a custom layer ---------------------------------------------------------


class ActivityPenalty(keras.layers.Layer):
    def call(self, inputs):
        self.add_loss(0.05 * keras.ops.mean(keras.ops.square(inputs)))
        return inputs


def penalized() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="tanh"),
            ActivityPenalty(),
            keras.layers.Dense(1),
        ]
    )


def test_add_loss_in_custom_layer_matches_keras():
    x, y = regression_data(n=64)
    keras.utils.set_random_seed(7)
    ref = penalized()
    net = penalized()
    net.set_weights(ref.get_weights())
    ref.compile(optimizer=sgd(), loss="mse", metrics=["mae"])
    ref_hist = ref.fit(x, y, **FIT)
    model = tfk.Model(net)
    model.compile(optimizer=sgd(), loss="mse", metrics=["mae"])
    hist = model.fit(x, y, **FIT)
    assert_history_close(hist, ref_hist)
    assert_weights_close(net.get_weights(), ref.get_weights())
    expected = ref.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    got = model.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=RTOL, err_msg=key, atol=ATOL)
    # The penalty is really in the loss: it exceeds the plain mse.
    pred = model.predict(x, batch_size=64, verbose=0)
    assert got["loss"] > np.mean((pred - y) ** 2) + 1e-4
