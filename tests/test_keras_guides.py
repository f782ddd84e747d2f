"""Patterns from the Keras guides, run on `keras.Model` and on `tfk.Model`.

Written in the style of "Customizing what happens in fit()", "Writing your
own callbacks", "Training & evaluation with the built-in methods" and "The
Functional API" (not copied): the same code runs twice, with only the line
that makes the model changed, and the History keys, logged names and numbers
must agree.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfk_trainer as tfk

ATOL = 1e-5
FIT = dict(batch_size=16, verbose=0, shuffle=False)


def regression(n: int = 64, features: int = 8):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, features)).astype("float32")
    return x, (x @ rng.normal(size=(features, 1))).astype("float32")


def classification(n: int = 64, features: int = 8, classes: int = 3):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(n, features)).astype("float32")
    return x, rng.integers(0, classes, size=(n,)).astype("int32")


def functional(units: int = 1, features: int = 8, seed: int = 4) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((features,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(units)(hidden))


def pair(make=functional, **kwargs):
    """The Keras network and a tfk model wrapping an identical copy."""
    return make(**kwargs), tfk.Model(make(**kwargs))


def same_history(hk, ht, atol: float = ATOL) -> None:
    """Same keys and numbers. Key order is compared as sets: tfk sorts History
    keys alphabetically; Keras sorts the step's dict before flattening it, so
    a step returning `{m.name: ...}` logs `mae` (from `compile_metrics`)
    before `loss` (docs/differences.md)."""
    assert sorted(hk.history) == sorted(ht.history)
    for key in hk.history:
        np.testing.assert_allclose(hk.history[key], ht.history[key], atol=atol, err_msg=key)


# -- Customizing what happens in fit() ---------------------------------------------------


def _custom_fit(base):
    class CustomFit(base):
        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compute_loss(y=y, y_pred=y_pred)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            for metric in self.metrics:
                if metric.name == "loss":
                    metric.update_state(loss)
                else:
                    metric.update_state(y, y_pred)
            return {m.name: m.result() for m in self.metrics}

    return CustomFit


def _subclass_on(base, cls_factory, seed=4):
    net = functional(seed=seed)
    if base is keras.Model:
        return cls_factory(base)(net.inputs, net.outputs)
    return cls_factory(base)(net)


def test_guide_custom_train_step_with_compiled_loss_and_metrics():
    x, y = regression()
    k = _subclass_on(keras.Model, _custom_fit)
    t = _subclass_on(tfk.Model, _custom_fit)
    for m in (k, t):
        m.compile(optimizer="adam", loss="mse", metrics=["mae"])
    same_history(k.fit(x, y, epochs=3, **FIT), t.fit(x, y, epochs=3, **FIT))


def _own_trackers(base):
    class OwnTrackers(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.loss_tracker = keras.metrics.Mean(name="loss")
            self.mae_metric = keras.metrics.MeanAbsoluteError(name="mae")

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = keras.losses.mean_squared_error(y, y_pred)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            self.loss_tracker.update_state(loss)
            self.mae_metric.update_state(y, y_pred)
            return {"loss": self.loss_tracker.result(), "mae": self.mae_metric.result()}

        @property
        def metrics(self):
            return [self.loss_tracker, self.mae_metric]

    return OwnTrackers


def test_guide_train_step_with_own_trackers_no_compiled_loss():
    x, y = regression()
    k = _subclass_on(keras.Model, _own_trackers)
    t = _subclass_on(tfk.Model, _own_trackers)
    for m in (k, t):
        m.compile(optimizer="adam")
    same_history(k.fit(x, y, epochs=3, **FIT), t.fit(x, y, epochs=3, **FIT))


def _weighted_step(base):
    class Weighted(base):
        def train_step(self, data):
            if len(data) == 3:
                x, y, sample_weight = data
            else:
                (x, y), sample_weight = data, None
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compute_loss(y=y, y_pred=y_pred, sample_weight=sample_weight)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            for metric in self.metrics:
                if metric.name == "loss":
                    metric.update_state(loss)
                else:
                    metric.update_state(y, y_pred, sample_weight=sample_weight)
            return {m.name: m.result() for m in self.metrics}

    return Weighted


@pytest.mark.xfail(
    strict=True,
    reason="Known gap (docs/differences.md): Keras's `self.metrics` holds a "
    "`compile_metrics` container that drops `sample_weight` for plain `metrics`; "
    "tfk's holds the metric objects, so `mae` is weighted here",
)
def test_guide_train_step_with_sample_weight():
    x, y = regression()
    weights = np.linspace(0.5, 1.5, len(x)).astype("float32")
    k = _subclass_on(keras.Model, _weighted_step)
    t = _subclass_on(tfk.Model, _weighted_step)
    for m in (k, t):
        m.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    hk = k.fit(x, y, sample_weight=weights, epochs=2, **FIT)
    ht = t.fit(x, y, sample_weight=weights, epochs=2, **FIT)
    same_history(hk, ht, atol=1e-4)


def _custom_eval(base):
    class CustomEval(base):
        def test_step(self, data):
            x, y = data
            y_pred = self(x, training=False)
            loss = self.compute_loss(y=y, y_pred=y_pred)
            for metric in self.metrics:
                if metric.name == "loss":
                    metric.update_state(loss)
                else:
                    metric.update_state(y, y_pred)
            return {m.name: m.result() for m in self.metrics}

    return CustomEval


def test_guide_custom_test_step_evaluate():
    x, y = regression()
    k = _subclass_on(keras.Model, _custom_eval)
    t = _subclass_on(tfk.Model, _custom_eval)
    for m in (k, t):
        m.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    rk = k.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    rt = t.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert sorted(rk) == sorted(rt)
    for key in rk:
        np.testing.assert_allclose(rk[key], rt[key], atol=ATOL)


# -- Writing your own callbacks ------------------------------------------------------------


class HookLog(keras.callbacks.Callback):
    """Every hook with the sorted keys of its logs."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def _add(self, hook, logs):
        self.calls.append((hook, tuple(sorted(logs or {}))))


for _hook in (
    "on_train_begin",
    "on_train_end",
    "on_test_begin",
    "on_test_end",
    "on_predict_begin",
    "on_predict_end",
):
    setattr(HookLog, _hook, lambda self, logs=None, _h=_hook: self._add(_h, logs))
for _hook in (
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
):
    setattr(HookLog, _hook, lambda self, i, logs=None, _h=_hook: self._add(f"{_h}({i})", logs))


def test_guide_callback_sees_the_same_hooks_and_keys():
    x, y = regression(n=32)
    k, t = pair()
    logs = []
    for m in (k, t):
        m.compile(optimizer="sgd", loss="mse", metrics=["mae"])
        cb = HookLog()
        m.fit(x, y, epochs=2, validation_split=0.5, callbacks=[cb], **FIT)
        m.evaluate(x, y, batch_size=16, verbose=0, callbacks=[cb])
        m.predict(x, batch_size=16, verbose=0, callbacks=[cb])
        # predict batch logs hold the outputs: compare the hook names only there
        logs.append([(h, () if "predict_batch_end" in h else keys) for h, keys in cb.calls])
    assert logs[0] == logs[1]


def test_guide_loss_and_error_printing_callback():
    x, y = regression()
    k, t = pair()
    seen = []
    for m in (k, t):
        m.compile(optimizer="sgd", loss="mse", metrics=["mean_absolute_error"])
        got = []
        cb = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda b, logs, got=got: got.append(("b", b, logs["loss"])),
            on_epoch_end=lambda e, logs, got=got: got.append(
                ("e", e, logs["loss"], logs["mean_absolute_error"])
            ),
        )
        m.fit(x, y, epochs=2, callbacks=[cb], **FIT)
        seen.append(got)
    assert len(seen[0]) == len(seen[1])
    for a, b in zip(*seen):
        assert a[:2] == b[:2]
        np.testing.assert_allclose(a[2:], b[2:], atol=ATOL)


class StopAtMinLoss(keras.callbacks.Callback):
    """Stops when the loss stops falling and restores the best weights."""

    def __init__(self, patience=0):
        super().__init__()
        self.patience = patience

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best = 0, 0, np.inf
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        current = logs.get("loss")
        if current < self.best:
            self.best, self.wait = current, 0
            self.best_weights = self.model.get_weights()
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.stopped_epoch = epoch
                self.model.stop_training = True
                self.model.set_weights(self.best_weights)


def test_guide_early_stopping_at_min_loss():
    x, y = regression()
    k, t = pair()
    stops, weights = [], []
    for m in (k, t):
        m.compile(optimizer=keras.optimizers.SGD(0.3), loss="mse")  # the loss rises at epoch 1
        cb = StopAtMinLoss(patience=1)
        m.fit(x, y, epochs=30, callbacks=[cb], **FIT)
        stops.append(cb.stopped_epoch)
        weights.append(m.get_weights())
    assert stops[0] == stops[1]
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-4)


class ScheduleLR(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        lr = float(self.model.optimizer.learning_rate)
        self.model.optimizer.learning_rate = lr * (0.5 if epoch % 2 else 1.0)


def test_guide_custom_learning_rate_scheduler():
    x, y = regression()
    k, t = pair()
    hist = []
    for m in (k, t):
        m.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        hist.append(m.fit(x, y, epochs=4, callbacks=[ScheduleLR()], **FIT))
        assert float(m.optimizer.learning_rate) == pytest.approx(0.0125)
    same_history(*hist)


# -- Training & evaluation with the built-in methods ---------------------------------------


def test_guide_classifier_with_validation_split_and_evaluate_list():
    x, y = classification()
    k, t = pair(units=3)
    for m in (k, t):
        m.compile(
            optimizer=keras.optimizers.RMSprop(1e-2),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy()],
        )
    hk = k.fit(x, y, epochs=2, validation_split=0.25, **FIT)
    ht = t.fit(x, y, epochs=2, validation_split=0.25, **FIT)
    same_history(hk, ht)
    np.testing.assert_allclose(
        k.evaluate(x, y, batch_size=16, verbose=0),
        t.evaluate(x, y, batch_size=16, verbose=0),
        atol=ATOL,
    )
    np.testing.assert_allclose(k.predict(x, verbose=0), t.predict(x, verbose=0), atol=ATOL)


class CategoricalTruePositives(keras.metrics.Metric):
    def __init__(self, name="categorical_true_positives", **kwargs):
        super().__init__(name=name, **kwargs)
        self.true_positives = self.add_variable(shape=(), name="ctp", initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = keras.ops.reshape(keras.ops.argmax(y_pred, axis=1), (-1, 1))
        values = keras.ops.cast(y_true, "int32") == keras.ops.cast(y_pred, "int32")
        values = keras.ops.cast(values, "float32")
        if sample_weight is not None:
            values = keras.ops.multiply(values, keras.ops.cast(sample_weight, "float32"))
        self.true_positives.assign_add(keras.ops.sum(values))

    def result(self):
        return self.true_positives

    def reset_state(self):
        self.true_positives.assign(0.0)


def custom_mse(y_true, y_pred):
    return keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)


def test_guide_custom_loss_function_and_metric_class():
    x, y = classification()
    y2 = y.reshape(-1, 1)
    k, t = pair(units=3)
    for m in (k, t):
        m.compile(
            optimizer="sgd",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[CategoricalTruePositives()],
        )
    same_history(k.fit(x, y2, epochs=2, **FIT), t.fit(x, y2, epochs=2, **FIT))
    x, y = regression()
    k, t = pair()
    for m in (k, t):
        m.compile(optimizer="sgd", loss=custom_mse)
    same_history(k.fit(x, y, epochs=2, **FIT), t.fit(x, y, epochs=2, **FIT))


def test_guide_class_weight_and_sample_weight():
    x, y = classification()
    weights = np.where(y == 1, 2.0, 1.0).astype("float32")
    runs = []
    for kwargs in ({"class_weight": {0: 1.0, 1: 2.0, 2: 1.0}}, {"sample_weight": weights}):
        k, t = pair(units=3)
        for m in (k, t):
            m.compile(
                optimizer="sgd",
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                weighted_metrics=["sparse_categorical_accuracy"],
            )
        hk = k.fit(x, y, epochs=2, **kwargs, **FIT)
        ht = t.fit(x, y, epochs=2, **kwargs, **FIT)
        same_history(hk, ht)
        runs.append(ht.history["loss"])
    np.testing.assert_allclose(runs[0], runs[1], atol=ATOL)


def _multi_io(seed: int = 6) -> keras.Model:
    keras.utils.set_random_seed(seed)
    image = keras.Input((8,), name="img_input")
    series = keras.Input((4,), name="ts_input")
    joined = keras.layers.concatenate([keras.layers.Dense(4)(image), keras.layers.Dense(4)(series)])
    score = keras.layers.Dense(1, name="score_output")(joined)
    klass = keras.layers.Dense(3, name="class_output")(joined)
    return keras.Model([image, series], [score, klass])


def test_guide_multi_input_multi_output_losses_and_weights():
    rng = np.random.default_rng(3)
    img = rng.normal(size=(64, 8)).astype("float32")
    ts = rng.normal(size=(64, 4)).astype("float32")
    score = rng.normal(size=(64, 1)).astype("float32")
    klass = rng.integers(0, 3, size=(64,)).astype("int32")
    k, t = pair(_multi_io)
    for m in (k, t):
        m.compile(
            optimizer="sgd",
            loss={
                "score_output": "mse",
                "class_output": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            },
            metrics={"score_output": ["mae"], "class_output": ["accuracy"]},
            loss_weights={"score_output": 2.0, "class_output": 1.0},
        )
    data = ({"img_input": img, "ts_input": ts}, {"score_output": score, "class_output": klass})
    same_history(k.fit(*data, epochs=2, **FIT), t.fit(*data, epochs=2, **FIT))
    rk = k.evaluate(*data, batch_size=16, verbose=0, return_dict=True)
    rt = t.evaluate(*data, batch_size=16, verbose=0, return_dict=True)
    assert sorted(rk) == sorted(rt)


# -- The Functional API -------------------------------------------------------------------


def _shared_and_nested(seed: int = 8) -> keras.Model:
    keras.utils.set_random_seed(seed)
    shared = keras.layers.Dense(4, activation="tanh")
    a, b = keras.Input((6,)), keras.Input((6,))
    encoder_in = keras.Input((4,))
    encoder = keras.Model(encoder_in, keras.layers.Dense(2)(encoder_in), name="encoder")
    merged = keras.layers.add([encoder(shared(a)), encoder(shared(b))])
    return keras.Model([a, b], keras.layers.Dense(1)(merged))


def test_functional_shared_layers_and_nested_model():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(2, 64, 6)).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")
    k, t = pair(_shared_and_nested)
    for m in (k, t):
        m.compile(optimizer="adam", loss="mse", metrics=["mae"])
    same_history(
        k.fit([a, b], y, epochs=2, validation_data=([a, b], y), **FIT),
        t.fit([a, b], y, epochs=2, validation_data=([a, b], y), **FIT),
    )
    assert len(k.trainable_weights) == len(t.trainable_weights)
