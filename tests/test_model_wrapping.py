"""`tfk.Model(net)` over the kinds of networks it accepts, and the variables it finds."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from tolerances import ATOL

import tfk_trainer as tfk

FEATURES = 4
N = 64


def _regression_data(n: int = N, outputs: int = 1):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, FEATURES)).astype("float32")
    w = rng.normal(size=(FEATURES, outputs)).astype("float32")
    y = (x @ w + 0.5).astype("float32")
    return x, y


def _ids(variables) -> set[int]:
    return {id(v) for v in variables}


def _fit_decreases(model: tfk.Model, x, y, lr: float = 0.05, epochs: int = 3, **fit_kwargs):
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    before = model.evaluate(x, y, batch_size=16, verbose=0)
    history = model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, **fit_kwargs)
    after = model.evaluate(x, y, batch_size=16, verbose=0)
    assert after < before, (before, after, history.history)
    assert history.history["loss"][-1] < history.history["loss"][0]
    return before, after


# -- Keras networks ------------------------------------------------------------------


def test_keras_sequential():
    net = keras.Sequential(
        [keras.Input((FEATURES,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
    )
    model = tfk.Model(net)
    x, y = _regression_data()
    _fit_decreases(model, x, y)
    assert _ids(model.trainable_variables) == _ids(net.trainable_variables)
    assert model.predict(x, verbose=0).shape == (N, 1)


def test_keras_functional():
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = keras.layers.Dense(1)(hidden)
    net = keras.Model(inputs, outputs)
    model = tfk.Model(net)
    x, y = _regression_data()
    _fit_decreases(model, x, y)
    assert _ids(model.trainable_variables) == _ids(net.trainable_variables)
    np.testing.assert_allclose(model.predict(x, verbose=0), net(x).numpy(), rtol=1e-5, atol=1e-6)


# -- tf.Module networks ------------------------------------------------------------------


class LinearRegression(tf.Module):
    """`y = x @ w + b`; `__call__` takes no `training` argument."""

    def __init__(self, features: int):
        super().__init__()
        self.w = tf.Variable(tf.zeros((features, 1)), name="w")
        self.b = tf.Variable(tf.zeros((1,)), name="b")

    def __call__(self, x):
        return x @ self.w + self.b


def test_plain_tf_module_with_variables():
    net = LinearRegression(FEATURES)
    model = tfk.Model(net)
    assert _ids(model.trainable_variables) == {id(net.w), id(net.b)}
    x, y = _regression_data()
    _fit_decreases(model, x, y, lr=0.1)
    assert _ids(model.trainable_variables) == {id(net.w), id(net.b)}
    assert np.abs(net.w.numpy()).sum() > 0  # trained away from zeros
    np.testing.assert_allclose(net.b.numpy(), [0.5], atol=0.2)


class ModuleOfKerasLayers(tf.Module):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.out = keras.layers.Dense(1)

    def __call__(self, x, training=False):
        return self.out(self.hidden(x))


def test_tf_module_holding_keras_layers():
    net = ModuleOfKerasLayers()
    model = tfk.Model(net)
    x, y = _regression_data()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.fit(x[:16], y[:16], batch_size=16, epochs=1, verbose=0)  # builds the layers
    expected = _ids(net.hidden.trainable_variables + net.out.trainable_variables)
    assert len(expected) == 4
    assert _ids(model.trainable_variables) == expected
    before = [v.numpy().copy() for v in model.trainable_variables]
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert model.evaluate(x, y, verbose=0) < first
    for b, v in zip(before, model.trainable_variables):
        assert not np.allclose(b, v.numpy())


class SubclassedModel(tfk.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.out = keras.layers.Dense(1)

    def call(self, inputs, training=False):
        return self.out(self.hidden(inputs))


def test_subclassed_tfk_model():
    model = SubclassedModel()
    x, y = _regression_data()
    _fit_decreases(model, x, y)
    expected = _ids(model.hidden.trainable_variables + model.out.trainable_variables)
    assert len(expected) == 4
    assert _ids(model.trainable_variables) == expected
    assert model.predict(x, verbose=0).shape == (N, 1)


def test_tfk_sequential():
    model = tfk.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(2)])
    assert isinstance(model, tfk.Model)
    x, y = _regression_data(outputs=2)
    _fit_decreases(model, x, y)
    assert len(model.trainable_variables) == 2
    assert model.predict(x, verbose=0).shape == (N, 2)


# -- trainability and state ------------------------------------------------------------------


def test_non_trainable_layer_is_frozen():
    frozen = keras.layers.Dense(8, activation="relu", name="frozen")
    head = keras.layers.Dense(1, name="head")
    net = keras.Sequential([keras.Input((FEATURES,)), frozen, head])
    frozen.trainable = False
    model = tfk.Model(net)
    x, y = _regression_data()
    frozen_before = [v.numpy().copy() for v in frozen.weights]
    head_before = [v.numpy().copy() for v in head.weights]
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert _ids(frozen.weights).isdisjoint(_ids(model.trainable_variables))
    assert _ids(frozen.weights) <= _ids(model.non_trainable_variables)
    for b, v in zip(frozen_before, frozen.weights):
        np.testing.assert_array_equal(b, v.numpy())
    for b, v in zip(head_before, head.weights):
        assert not np.allclose(b, v.numpy())


def test_batch_normalization_moving_stats():
    bn = keras.layers.BatchNormalization()
    net = keras.Sequential(
        [keras.Input((FEATURES,)), keras.layers.Dense(4), bn, keras.layers.Dense(1)]
    )
    model = tfk.Model(net)
    stats = [bn.moving_mean, bn.moving_variance]
    assert _ids(stats) <= _ids(model.non_trainable_variables)
    assert _ids(stats).isdisjoint(_ids(model.trainable_variables))
    before = [v.numpy().copy() for v in stats]
    x, y = _regression_data()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for b, v in zip(before, stats):
        assert not np.allclose(b, v.numpy())
    # Inference uses the moving statistics: predict is the network in inference mode.
    np.testing.assert_allclose(
        model.predict(x, verbose=0), net(x, training=False).numpy(), rtol=1e-5, atol=1e-5
    )
    # evaluate does not update them.
    after_fit = [v.numpy().copy() for v in stats]
    model.evaluate(x, y, verbose=0)
    for b, v in zip(after_fit, stats):
        np.testing.assert_array_equal(b, v.numpy())


def _regularized_pair(l2: float = 0.1):
    """Two identical nets, one with an L2 kernel regularizer on the last layer."""
    inputs = keras.Input((FEATURES,))
    plain = keras.Sequential([inputs, keras.layers.Dense(4), keras.layers.Dense(1)])
    reg = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(4),
            keras.layers.Dense(1, kernel_regularizer=keras.regularizers.L2(l2)),
        ]
    )
    reg.set_weights(plain.get_weights())
    return plain, reg


def test_kernel_regularizer_adds_to_loss():
    plain, reg = _regularized_pair(0.1)
    x, y = _regression_data()
    plain_model, reg_model = tfk.Model(plain), tfk.Model(reg)
    for m in (plain_model, reg_model):
        m.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    plain_loss = plain_model.evaluate(x, y, verbose=0)
    reg_loss = reg_model.evaluate(x, y, verbose=0)
    penalty = 0.1 * float(np.sum(reg.layers[-1].kernel.numpy() ** 2))
    assert reg_loss > plain_loss
    np.testing.assert_allclose(reg_loss, plain_loss + penalty, rtol=1e-5, atol=ATOL)
    # fit reports the regularized loss too.
    plain_hist = plain_model.fit(x, y, batch_size=N, epochs=1, shuffle=False, verbose=0)
    reg_hist = reg_model.fit(x, y, batch_size=N, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(reg_hist.history["loss"][0], plain_loss + penalty, rtol=1e-5, atol=ATOL)
    np.testing.assert_allclose(plain_hist.history["loss"][0], plain_loss, rtol=1e-5, atol=ATOL)


def test_kernel_regularizer_matches_keras_fit():
    _, reg = _regularized_pair(0.05)
    twin = keras.models.clone_model(reg)
    twin.set_weights(reg.get_weights())
    x, y = _regression_data()

    twin.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    keras_hist = twin.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)

    model = tfk.Model(reg)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    tfk_hist = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)

    np.testing.assert_allclose(tfk_hist.history["loss"], keras_hist.history["loss"], atol=1e-5)
    for a, b in zip(reg.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(
        model.evaluate(x, y, verbose=0), twin.evaluate(x, y, verbose=0), atol=1e-5
    )


class TrainingProbe(keras.layers.Layer):
    """Records the Python value of `training` each time it is traced or called."""

    def __init__(self):
        super().__init__()
        self.seen: list = []

    def call(self, x, training=None):
        self.seen.append(training)
        return x


def test_dropout_training_in_fit_not_in_predict():
    probe = TrainingProbe()
    net = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(16),
            probe,
            keras.layers.Dropout(0.5),
            keras.layers.Dense(1),
        ]
    )
    model = tfk.Model(net)
    x, y = _regression_data()
    # A zero learning rate: fit reports the loss of fixed weights under dropout.
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    eval_loss = model.evaluate(x, y, batch_size=16, verbose=0)
    probe.seen.clear()
    fit_loss = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history["loss"][0]
    assert True in probe.seen and False not in probe.seen
    assert not np.isclose(fit_loss, eval_loss, rtol=1e-4), (fit_loss, eval_loss)
    assert model.evaluate(x, y, batch_size=16, verbose=0) == pytest.approx(eval_loss, rel=1e-6)

    probe.seen.clear()
    first = model.predict(x, verbose=0)
    second = model.predict(x, verbose=0)
    assert probe.seen and True not in probe.seen
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, net(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.predict_on_batch(x), model.predict_on_batch(x))


# -- weights ------------------------------------------------------------------------


def test_get_set_weights_round_trip():
    net = keras.Sequential(
        [keras.Input((FEATURES,)), keras.layers.Dense(3), keras.layers.BatchNormalization()]
    )
    model = tfk.Model(net)
    weights = model.get_weights()
    assert len(weights) == len(model.variables) == 6  # kernel, bias, gamma, beta, mean, var
    assert all(isinstance(w, np.ndarray) for w in weights)
    x, _ = _regression_data()

    new = [w + 1.0 for w in weights]
    model.set_weights(new)
    for a, b in zip(new, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(new, [v.numpy() for v in model.variables]):
        np.testing.assert_array_equal(a, b)
    changed = model.predict(x, verbose=0)

    model.set_weights(weights)
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    restored = model.predict(x, verbose=0)
    assert not np.allclose(changed, restored)
    np.testing.assert_allclose(restored, net(x, training=False).numpy(), rtol=1e-5, atol=1e-6)


def test_set_weights_wrong_length():
    model = tfk.Model(keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(3)]))
    weights = model.get_weights()
    with pytest.raises(ValueError, match=r"`set_weights` expects 2 arrays.*received 1"):
        model.set_weights(weights[:1])
    with pytest.raises(ValueError, match=r"`set_weights` expects 2 arrays.*received 3"):
        model.set_weights(weights + [weights[0]])


def test_set_weights_wrong_shape():
    model = tfk.Model(keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(3)]))
    kernel, bias = model.get_weights()
    with pytest.raises(ValueError, match=r"shape"):
        model.set_weights([kernel.T, bias])


# -- beyond the brief: containers, frozen tf.Variables, activity regularizers ---------


class DictAndListModel(tfk.Model):
    def __init__(self):
        super().__init__()
        self.blocks = {"first": keras.layers.Dense(8), "last": keras.layers.Dense(1)}
        self.middle = [keras.layers.Dense(4), keras.layers.Dense(4)]

    def call(self, inputs, training=False):
        h = self.blocks["first"](inputs)
        for layer in self.middle:
            h = layer(h)
        return self.blocks["last"](h)


def test_subclassed_model_with_dict_and_list_of_layers():
    model = DictAndListModel()
    x, y = _regression_data()
    _fit_decreases(model, x, y, lr=0.01)
    layers = [*model.blocks.values(), *model.middle]
    expected = _ids([v for layer in layers for v in layer.trainable_variables])
    assert len(expected) == 8
    assert _ids(model.trainable_variables) == expected


class ScaledLinear(tf.Module):
    """Variables in a list, and a non-trainable tf.Variable."""

    def __init__(self):
        super().__init__()
        self.params = [tf.Variable(tf.zeros((FEATURES, 1))), tf.Variable(tf.zeros((1,)))]
        self.scale = tf.Variable(2.0, trainable=False)

    def __call__(self, x):
        return (x @ self.params[0] + self.params[1]) * self.scale


def test_tf_module_variable_list_and_frozen_variable():
    net = ScaledLinear()
    model = tfk.Model(net)
    assert _ids(model.trainable_variables) == _ids(net.params)
    assert _ids(model.non_trainable_variables) == {id(net.scale)}
    x, y = _regression_data()
    _fit_decreases(model, x, y, lr=0.02)
    assert float(net.scale.numpy()) == 2.0


def test_activity_regularizer_matches_keras_fit():
    net = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(4, activity_regularizer=keras.regularizers.L2(0.1)),
            keras.layers.Dense(1),
        ]
    )
    twin = keras.models.clone_model(net)
    twin.set_weights(net.get_weights())
    x, y = _regression_data()
    twin.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    keras_hist = twin.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    model = tfk.Model(net)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    tfk_hist = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(tfk_hist.history["loss"], keras_hist.history["loss"], atol=1e-5)
    np.testing.assert_allclose(
        model.evaluate(x, y, verbose=0), twin.evaluate(x, y, verbose=0), atol=1e-5
    )
