"""Multi-output `compile()`: per-output losses, loss_weights, metrics and logs.

Most tests are differential: the same two-headed Keras network is built twice
from one seed, one copy is trained with `keras.Model.fit` and the other with
`tfk.Model(net).fit` (`shuffle=False`), and history keys (and their order),
values, weights and `evaluate()` must agree. Where Keras 3.15 is wrong (the
per-output `{name}_loss` logs with a partial last batch, gradient clipping
across replicas) the expected numbers are computed directly instead.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from tolerances import ATOL, ATOL_MULTI, RTOL, assert_dict_close, assert_history_equal

import tfk_trainer as tfk

LOSS = {"a": "sparse_categorical_crossentropy", "b": "mse"}
LOSS_WEIGHTS = {"a": 1.0, "b": 0.5}
METRICS = {"a": ["accuracy"], "b": ["mae", "mae"]}
WEIGHTED = {"a": ["accuracy"]}
DICT_KEYS = ["a_accuracy", "a_loss", "a_weighted_accuracy", "b_loss", "b_mae", "b_mae_1", "loss"]
DICT_NAMES = ["loss", "a_loss", "b_loss", "a_accuracy", "a_weighted_accuracy", "b_mae", "b_mae_1"]

# -- data and networks -----------------------------------------------------------


def two_head_data(n: int = 96, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    w = rng.normal(size=(6, 3)).astype("float32")
    ya = np.argmax(x @ w, axis=1).astype("int64")
    yb = (np.sin(x[:, :1]) + 0.5 * x[:, 1:2]).astype("float32")
    return x, ya, yb


def regression_data(n: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (np.sin(x[:, :1]) + 0.5 * x[:, 1:2] - 0.25 * x[:, 2:3] ** 2).astype("float32")
    return x, y


def dict_net() -> keras.Model:
    inp = keras.Input((6,))
    h = keras.layers.Dense(8, activation="tanh")(inp)
    a = keras.layers.Dense(3, activation="softmax", name="a")(h)
    b = keras.layers.Dense(1, name="b")(h)
    return keras.Model(inp, {"a": a, "b": b})


def list_net() -> keras.Model:
    inp = keras.Input((6,))
    h = keras.layers.Dense(8, activation="tanh")(inp)
    a = keras.layers.Dense(3, activation="softmax", name="a")(h)
    b = keras.layers.Dense(1, name="b")(h)
    return keras.Model(inp, [a, b])


def regressor() -> keras.Model:
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
    )


def twin(builder, seed: int = 7):
    keras.utils.set_random_seed(seed)
    ref = builder()
    keras.utils.set_random_seed(seed)
    other = builder()
    other.set_weights(ref.get_weights())
    return ref, other


def sgd():
    return keras.optimizers.SGD(learning_rate=0.1, momentum=0.5)


# -- assertions --------------------------------------------------------------------


def assert_weights_equal(ref_net, model, rtol=RTOL, atol=ATOL) -> None:
    for i, (g, e) in enumerate(zip(model.network.get_weights(), ref_net.get_weights())):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"weight {i}")



def fit_both(ref_net, net, compile_kwargs, fit_kwargs, make_optimizer=sgd):
    ref_net.compile(optimizer=make_optimizer(), **compile_kwargs)
    ref_hist = ref_net.fit(verbose=0, shuffle=False, **fit_kwargs)
    model = tfk.Model(net)
    model.compile(optimizer=make_optimizer(), **compile_kwargs)
    hist = model.fit(verbose=0, shuffle=False, **fit_kwargs)
    return ref_hist, model, hist


def sparse_ce(y, p) -> np.ndarray:
    return keras.losses.sparse_categorical_crossentropy(y, p).numpy()


# -- 1. the two-headed dict model against Keras ----------------------------------------


@pytest.mark.parametrize("targets", ["dict", "list"])
def test_dict_outputs_match_keras(targets):
    x, ya, yb = two_head_data()
    y = {"a": ya, "b": yb} if targets == "dict" else [ya, yb]
    y_keras = {"a": ya, "b": yb}  # Keras's own dict form: the reference either way
    compile_kwargs = dict(
        loss=LOSS, loss_weights=LOSS_WEIGHTS, metrics=METRICS, weighted_metrics=WEIGHTED
    )
    ref_net, net = twin(dict_net)
    ref_net.compile(optimizer=sgd(), **compile_kwargs)
    ref_hist = ref_net.fit(x, y_keras, batch_size=16, epochs=2, shuffle=False, verbose=0)
    model = tfk.Model(net)
    model.compile(optimizer=sgd(), **compile_kwargs)
    hist = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)

    assert list(hist.history) == DICT_KEYS
    assert_history_equal(ref_hist, hist)
    assert_weights_equal(ref_net, model)
    assert model.metrics_names == DICT_NAMES

    expected = ref_net.evaluate(x, y_keras, batch_size=16, verbose=0, return_dict=True)
    got = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert list(got) == DICT_KEYS
    assert_dict_close(got, expected)
    as_list = model.evaluate(x, y, batch_size=16, verbose=0)
    np.testing.assert_allclose(as_list, [got[k] for k in model.metrics_names], rtol=1e-7, atol=ATOL)

    pred = model.predict(x, batch_size=16, verbose=0)
    ref_pred = ref_net.predict(x, batch_size=16, verbose=0)
    assert sorted(pred) == ["a", "b"]
    for k in ("a", "b"):
        np.testing.assert_allclose(pred[k], ref_pred[k], rtol=RTOL, atol=ATOL)


# -- 2. list outputs --------------------------------------------------------------------


@pytest.mark.parametrize(
    "metrics, keys",
    [
        ([["accuracy"], ["mae"]], ["a_accuracy", "a_loss", "b_loss", "b_mae", "loss"]),
        (
            ["accuracy", ["mae", "mse"]],
            ["a_accuracy", "a_loss", "b_loss", "b_mae", "b_mse", "loss"],
        ),
    ],
)
def test_list_outputs_match_keras(metrics, keys):
    x, ya, yb = two_head_data()
    ref_net, net = twin(list_net)
    ref_hist, model, hist = fit_both(
        ref_net,
        net,
        dict(loss=["sparse_categorical_crossentropy", "mse"], metrics=metrics),
        dict(x=x, y=[ya, yb], batch_size=16, epochs=2),
    )
    assert list(hist.history) == keys
    assert_history_equal(ref_hist, hist)
    assert_weights_equal(ref_net, model)
    expected = ref_net.evaluate(x, [ya, yb], batch_size=16, verbose=0, return_dict=True)
    got = model.evaluate(x, [ya, yb], batch_size=16, verbose=0, return_dict=True)
    assert_dict_close(got, expected)


def test_list_outputs_untrained_output_matches_keras():
    x, ya, yb = two_head_data()
    ref_net, net = twin(list_net)
    b_kernel_before = [w.copy() for w in net.get_layer("b").get_weights()]
    ref_hist, model, hist = fit_both(
        ref_net,
        net,
        dict(loss=["sparse_categorical_crossentropy", None], metrics=["accuracy", ["mae", "mse"]]),
        dict(x=x, y=[ya, yb], batch_size=16, epochs=2),
    )
    # One loss: no per-output loss logs.
    assert list(hist.history) == ["a_accuracy", "b_mae", "b_mse", "loss"]
    assert_history_equal(ref_hist, hist)
    assert_weights_equal(ref_net, model)
    for before, after in zip(b_kernel_before, net.get_layer("b").get_weights()):
        np.testing.assert_array_equal(after, before)
    expected = ref_net.evaluate(x, [ya, yb], batch_size=16, verbose=0, return_dict=True)
    got = model.evaluate(x, [ya, yb], batch_size=16, verbose=0, return_dict=True)
    assert_dict_close(got, expected)


# -- 3. loss_weights forms and one loss for every output -----------------------------------


@pytest.mark.parametrize("form", ["list", "dict"])
def test_loss_weights_list_and_dict_match_keras(form):
    x, ya, yb = two_head_data()
    loss_weights = [0.3, 2.0] if form == "list" else {"a": 0.3, "b": 2.0}
    ref_net, net = twin(dict_net)
    ref_hist, model, hist = fit_both(
        ref_net,
        net,
        dict(loss=LOSS, loss_weights=loss_weights),
        dict(x=x, y={"a": ya, "b": yb}, batch_size=16, epochs=2),
    )
    assert list(hist.history) == ["a_loss", "b_loss", "loss"]
    assert_history_equal(ref_hist, hist)
    assert_weights_equal(ref_net, model)
    got = model.evaluate(x, {"a": ya, "b": yb}, batch_size=96, verbose=0, return_dict=True)
    np.testing.assert_allclose(got["loss"], 0.3 * got["a_loss"] + 2.0 * got["b_loss"], rtol=RTOL, atol=ATOL)


def test_loss_weights_float_scales_every_output():
    # Keras 3.15 rejects a float (`object of type 'float' has no len()`): the
    # reference is Keras with the equivalent list [w, w].
    x, ya, yb = two_head_data()
    y = {"a": ya, "b": yb}
    ref_net, net = twin(dict_net)
    ref_net.compile(optimizer=sgd(), loss=LOSS, loss_weights=[0.25, 0.25])
    ref_hist = ref_net.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    model = tfk.Model(net)
    model.compile(optimizer=sgd(), loss=LOSS, loss_weights=0.25)
    hist = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert_history_equal(ref_hist, hist)
    assert_weights_equal(ref_net, model)
    got = model.evaluate(x, y, batch_size=96, verbose=0, return_dict=True)
    np.testing.assert_allclose(got["loss"], 0.25 * (got["a_loss"] + got["b_loss"]), rtol=RTOL, atol=ATOL)


def test_single_loss_applies_to_every_output():
    x, ya, yb = two_head_data()
    y = {"a": np.eye(3, dtype="float32")[ya], "b": yb}
    ref_net, net = twin(dict_net)
    ref_hist, model, hist = fit_both(
        ref_net, net, dict(loss="mse"), dict(x=x, y=y, batch_size=16, epochs=2)
    )
    assert list(hist.history) == ["a_loss", "b_loss", "loss"]
    assert_history_equal(ref_hist, hist)
    assert_weights_equal(ref_net, model)
    got = model.evaluate(x, y, batch_size=96, verbose=0, return_dict=True)
    np.testing.assert_allclose(got["loss"], got["a_loss"] + got["b_loss"], rtol=RTOL, atol=ATOL)
    pred = model.predict(x, batch_size=96, verbose=0)
    np.testing.assert_allclose(got["a_loss"], np.mean((pred["a"] - y["a"]) ** 2), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got["b_loss"], np.mean((pred["b"] - yb) ** 2), rtol=RTOL, atol=ATOL)


# -- 4. partial last batch: per-output losses are exact means ---------------------------------


def _outlier_data():
    x, ya, yb = two_head_data(n=100)
    yb = yb.copy()
    yb[-4:] += 25.0  # the last (partial) batch of 4 is made of outliers
    return x, ya, yb


def test_partial_last_batch_per_output_losses_are_exact():
    x, ya, yb = _outlier_data()
    y = {"a": ya, "b": yb}
    keras.utils.set_random_seed(3)
    model = tfk.Model(dict_net())
    model.compile(optimizer=sgd(), loss=LOSS, loss_weights={"a": 0.7, "b": 0.2})
    got = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    np.testing.assert_allclose(got["loss"], 0.7 * got["a_loss"] + 0.2 * got["b_loss"], rtol=RTOL, atol=ATOL)
    pred = model.predict(x, batch_size=32, verbose=0)
    np.testing.assert_allclose(got["a_loss"], np.mean(sparse_ce(ya, pred["a"])), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got["b_loss"], np.mean((pred["b"] - yb) ** 2), rtol=RTOL, atol=ATOL)


def test_partial_last_batch_keras_per_output_loss_differs():
    """Documents Keras 3.15: its per-output logs are unweighted means of batches.

    The 4 outliers of the last batch then count as a quarter of the data in
    Keras's `b_loss`. Skipped (not failed) if a Keras release fixes it.
    """
    x, ya, yb = _outlier_data()
    y = {"a": ya, "b": yb}
    keras.utils.set_random_seed(3)
    model = tfk.Model(dict_net())
    model.compile(optimizer=sgd(), loss=LOSS)
    got = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    ref = dict_net()
    ref.set_weights(model.network.get_weights())
    ref.compile(optimizer=sgd(), loss=LOSS)
    keras_logs = ref.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    if np.isclose(keras_logs["b_loss"], got["b_loss"], rtol=1e-4):
        pytest.skip("Keras now weights per-output losses by batch size")
    pred = model.predict(x, batch_size=32, verbose=0)
    np.testing.assert_allclose(got["b_loss"], np.mean((pred["b"] - yb) ** 2), rtol=RTOL, atol=ATOL)


def test_partial_last_batch_fit_logs_are_exact():
    # The epoch's per-output logs are batch-size-weighted means of the batches,
    # so with fixed weights (lr 0) they equal the full-data losses.
    x, ya, yb = _outlier_data()
    y = {"a": ya, "b": yb}
    model = tfk.Model(dict_net())
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=LOSS, loss_weights={"a": 1.0, "b": 0.5})
    hist = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    pred = model.predict(x, batch_size=32, verbose=0)
    a_loss = np.mean(sparse_ce(ya, pred["a"]))
    b_loss = np.mean((pred["b"] - yb) ** 2)
    np.testing.assert_allclose(hist.history["a_loss"][0], a_loss, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(hist.history["b_loss"][0], b_loss, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(hist.history["loss"][0], a_loss + 0.5 * b_loss, rtol=RTOL, atol=ATOL)


# -- 5. the dict model under MirroredStrategy ---------------------------------------------------


@pytest.mark.parametrize("replicas", [2, 4])
def test_dict_outputs_mirrored_match_single_device(mirrored_strategy, replicas):
    # 100 samples, batch 16: six full batches and one of 4 (split 2/2 or 1/1/1/1);
    # steps_per_execution=3: executions of 3, 3 and 1 steps.
    x, ya, yb = _outlier_data()
    y = {"a": ya, "b": yb}
    sw = np.random.default_rng(5).uniform(0.5, 1.5, size=len(x)).astype("float32")
    compile_kwargs = dict(
        loss=LOSS, loss_weights=LOSS_WEIGHTS, metrics=METRICS, weighted_metrics=WEIGHTED
    )
    fit_kwargs = dict(batch_size=16, epochs=2, shuffle=False, verbose=0, sample_weight=sw)
    keras.utils.set_random_seed(9)
    start = dict_net().get_weights()

    single = tfk.Model(dict_net())
    single.network.set_weights(start)
    single.compile(optimizer=sgd(), steps_per_execution=3, **compile_kwargs)
    ref_hist = single.fit(x, y, **fit_kwargs)

    strategy = mirrored_strategy(replicas)
    with strategy.scope():
        net = dict_net()
        net.set_weights(start)
        model = tfk.Model(net)
        model.compile(optimizer=sgd(), steps_per_execution=3, **compile_kwargs)
    assert model.distribute_strategy.num_replicas_in_sync == replicas
    hist = model.fit(x, y, **fit_kwargs)
    assert list(hist.history) == DICT_KEYS
    assert_history_equal(ref_hist, hist, atol=ATOL_MULTI)
    assert_weights_equal(single.network, model, atol=ATOL_MULTI)
    expected = single.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    got = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert_dict_close(got, expected, atol=ATOL_MULTI)


# -- 6. subclassed tfk.Model returning a dict -------------------------------------------------


class DictOutputModel(tfk.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="tanh")
        self.head_z = keras.layers.Dense(1)
        self.head_y = keras.layers.Dense(3, activation="softmax")

    def call(self, inputs, training=False):
        h = self.hidden(inputs)
        return {"z": self.head_z(h), "y": self.head_y(h)}


def test_subclassed_dict_outputs():
    x, ya, yb = two_head_data()
    model = DictOutputModel()
    model.compile(
        optimizer=sgd(),
        loss={"z": "mse", "y": "sparse_categorical_crossentropy"},
        metrics={"z": ["mae"]},
    )
    y = {"z": yb, "y": ya}
    hist = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert list(hist.history) == ["loss", "y_loss", "z_loss", "z_mae"]
    assert hist.history["loss"][1] < hist.history["loss"][0]
    got = model.evaluate(x, y, batch_size=96, verbose=0, return_dict=True)
    np.testing.assert_allclose(got["loss"], got["y_loss"] + got["z_loss"], rtol=RTOL, atol=ATOL)
    pred = model.predict(x, batch_size=96, verbose=0)
    assert sorted(pred) == ["y", "z"]
    np.testing.assert_allclose(got["z_loss"], np.mean((pred["z"] - yb) ** 2), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got["z_mae"], np.mean(np.abs(pred["z"] - yb)), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got["y_loss"], np.mean(sparse_ce(ya, pred["y"])), rtol=RTOL, atol=ATOL)


# -- 7. sample weights ------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["array", "dict"])
def test_sample_weight_per_output(form):
    x, ya, yb = two_head_data(n=100)
    y = {"a": ya, "b": yb}
    rng = np.random.default_rng(4)
    swa = rng.uniform(0.0, 2.0, size=len(x)).astype("float32")
    swb = swa if form == "array" else rng.uniform(0.0, 2.0, size=len(x)).astype("float32")
    sw = swa if form == "array" else {"a": swa, "b": swb}
    keras.utils.set_random_seed(3)
    model = tfk.Model(dict_net())
    model.compile(
        optimizer=sgd(),
        loss=LOSS,
        loss_weights=LOSS_WEIGHTS,
        metrics={"a": ["accuracy"]},
        weighted_metrics={"a": ["accuracy"], "b": ["mae"]},
    )
    got = model.evaluate(x, y, sample_weight=sw, batch_size=32, verbose=0, return_dict=True)
    pred = model.predict(x, batch_size=32, verbose=0)
    n = len(x)
    a_loss = np.sum(swa * sparse_ce(ya, pred["a"])) / n
    b_loss = np.sum(swb * (pred["b"][:, 0] - yb[:, 0]) ** 2) / n
    correct = (np.argmax(pred["a"], axis=1) == ya).astype("float64")
    np.testing.assert_allclose(got["a_loss"], a_loss, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got["b_loss"], b_loss, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got["loss"], a_loss + 0.5 * b_loss, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got["a_accuracy"], correct.mean(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        got["a_weighted_accuracy"], np.sum(swa * correct) / np.sum(swa), rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        got["b_mae"], np.sum(swb * np.abs(pred["b"][:, 0] - yb[:, 0])) / np.sum(swb), rtol=RTOL, atol=ATOL
    )
    # Training with the weights uses them: zero weight on output b leaves
    # that head's own layer untouched.
    if form == "dict":
        before = [w.copy() for w in model.network.get_layer("b").get_weights()]
        model.fit(
            x,
            y,
            sample_weight={"a": swa, "b": np.zeros_like(swb)},
            batch_size=32,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
        for b, a in zip(before, model.network.get_layer("b").get_weights()):
            np.testing.assert_array_equal(a, b)


def test_sample_weight_array_matches_keras():
    x, ya, yb = two_head_data()
    sw = np.random.default_rng(4).uniform(0.0, 2.0, size=len(x)).astype("float32")
    ref_net, net = twin(dict_net)
    ref_hist, model, hist = fit_both(
        ref_net,
        net,
        dict(loss=LOSS, loss_weights=LOSS_WEIGHTS, weighted_metrics=WEIGHTED),
        dict(x=x, y={"a": ya, "b": yb}, sample_weight=sw, batch_size=16, epochs=2),
    )
    assert_history_equal(ref_hist, hist)
    assert_weights_equal(ref_net, model)


# -- 8. clear errors --------------------------------------------------------------------------


def _compiled(**kwargs) -> tfk.Model:
    model = tfk.Model(dict_net())
    model.compile(**{"optimizer": "sgd", "loss": LOSS, **kwargs})
    return model


def _fit(model, n: int = 16, **kwargs):
    x, ya, yb = two_head_data(n=n)
    y = kwargs.pop("y", {"a": ya, "b": yb})
    return model.fit(x, y, batch_size=8, epochs=1, verbose=0, **kwargs)


def test_error_loss_weights_wrong_length():
    with pytest.raises(ValueError, match=r"`loss_weights`.*3 entries"):
        _fit(_compiled(loss_weights=[1.0, 0.5, 2.0]))


def test_error_loss_dict_unknown_output():
    model = tfk.Model(dict_net())
    model.compile("sgd", loss={"a": "sparse_categorical_crossentropy", "bb": "mse"})
    with pytest.raises(ValueError, match=r"`loss`.*'bb'.*not output names.*\['a', 'b'\]"):
        _fit(model)


def test_error_metrics_dict_unknown_output():
    with pytest.raises(ValueError, match=r"`metrics`.*'c'.*not output names"):
        _fit(_compiled(metrics={"a": ["accuracy"], "c": ["mae"]}))


def test_error_weighted_metrics_dict_unknown_output():
    with pytest.raises(ValueError, match=r"`weighted_metrics`.*'x'.*not output names"):
        _fit(_compiled(weighted_metrics={"x": ["mae"]}))


def test_error_unknown_metric_name_suggests():
    with pytest.raises(ValueError, match=r"'acuracy'.*`metrics`.*Close matches: 'accuracy'"):
        _compiled(metrics={"a": ["acuracy"]})


def test_error_unknown_loss_name_suggests():
    with pytest.raises(ValueError, match=r"'mse_'.*`loss`.*Close matches"):
        tfk.Model(dict_net()).compile("sgd", loss={"a": "mse_", "b": "mse"})


def test_error_metrics_list_wrong_length():
    with pytest.raises(ValueError, match=r"`metrics`.*2 outputs.*list of 3"):
        _fit(_compiled(metrics=[["accuracy"], ["mae"], ["mse"]]))


def test_error_targets_dict_missing_output():
    x, ya, _ = two_head_data(n=16)
    with pytest.raises(ValueError, match=r"`y`.*without keys \['b'\]"):
        _fit(_compiled(), y={"a": ya})


def test_error_targets_list_wrong_length():
    x, ya, yb = two_head_data(n=16)
    with pytest.raises(ValueError, match=r"`y`.*3 entries"):
        _fit(_compiled(), y=[ya, yb, yb])


@pytest.mark.parametrize("bad_shape", ["batch_plus_one", "fixed_3"])
def test_error_custom_loss_wrong_shape(bad_shape):
    def bad_loss(y_true, y_pred):
        err = tf.reduce_mean(tf.square(y_true - y_pred), axis=-1)
        if bad_shape == "batch_plus_one":
            return tf.concat([err, err[:1]], axis=0)  # (batch + 1,)
        return tf.zeros([3]) + tf.reduce_mean(err)  # (3,) whatever the batch

    x, y = regression_data(n=16)
    model = tfk.Model(regressor())
    model.compile("sgd", loss=bad_loss)
    with pytest.raises(ValueError, match=r"`loss`.*bad_loss.*shape"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)


# -- 9. mixed precision -----------------------------------------------------------------------


def _is_float32(value) -> bool:
    return isinstance(value, float) and float(np.float32(value)) == value


def test_mixed_float16_wraps_and_trains():
    keras.config.set_dtype_policy("mixed_float16")
    x, y = regression_data(n=96)
    model = tfk.Model(regressor())
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse", metrics=["mae"])
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    hist = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    assert list(hist.history) == ["loss", "mae"]
    losses = hist.history["loss"]
    assert losses[2] < losses[0]
    for key, values in hist.history.items():
        assert all(_is_float32(v) and np.isfinite(v) for v in values), (key, values)
    logs = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert all(_is_float32(v) for v in logs.values()), logs
    logs = model.train_on_batch(x[:16], y[:16], return_dict=True)
    assert all(_is_float32(v) for v in logs.values()), logs


def test_mixed_float16_overflow_step_is_skipped():
    keras.config.set_dtype_policy("mixed_float16")
    x, y = regression_data(n=16)
    model = tfk.Model(regressor())
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    model.train_on_batch(x, y)  # a normal step builds everything and updates
    before = model.get_weights()
    scale = float(model.optimizer.dynamic_scale.numpy())
    huge = np.full_like(y, 1e30, dtype="float32")
    model.train_on_batch(x, huge)
    for b, a in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert float(model.optimizer.dynamic_scale.numpy()) == scale / 2
    # A finite step afterwards updates again.
    model.train_on_batch(x, y)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_mixed_float16_auto_scale_loss_false():
    keras.config.set_dtype_policy("mixed_float16")
    x, y = regression_data(n=32)
    model = tfk.Model(regressor())
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", auto_scale_loss=False)
    assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    hist = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])


def test_mixed_bfloat16_not_wrapped():
    keras.config.set_dtype_policy("mixed_bfloat16")
    x, y = regression_data(n=32)
    model = tfk.Model(regressor())
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"])
    assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    hist = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    for key, values in hist.history.items():
        assert all(_is_float32(v) and np.isfinite(v) for v in values), (key, values)


# -- 10. gradient clipping sees the global gradient ---------------------------------------------


@pytest.mark.parametrize(
    "clip", [dict(global_clipnorm=0.1), dict(clipnorm=0.1), dict(clipvalue=0.01)]
)
def test_gradient_clipping_across_replicas(mirrored_strategy, clip):
    x, y = regression_data(n=64)
    keras.utils.set_random_seed(21)
    start = regressor().get_weights()
    fit_kwargs = dict(batch_size=32, epochs=2, shuffle=False, verbose=0)

    def train(strategy, **opt_kwargs):
        with strategy.scope():
            net = regressor()
            net.set_weights(start)
            model = tfk.Model(net)
            model.compile(optimizer=keras.optimizers.SGD(0.5, **opt_kwargs), loss="mse")
        hist = model.fit(x, y, **fit_kwargs)
        return model, hist

    single, single_hist = train(tf.distribute.get_strategy(), **clip)
    unclipped, _ = train(tf.distribute.get_strategy())
    # The clipping is active (else this test would prove nothing).
    assert any(
        not np.allclose(a, b, atol=1e-4)
        for a, b in zip(single.get_weights(), unclipped.get_weights())
    )
    multi, multi_hist = train(mirrored_strategy(2), **clip)
    for i, (a, b) in enumerate(zip(multi.get_weights(), single.get_weights())):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=f"weight {i}")
    np.testing.assert_allclose(
        multi_hist.history["loss"], single_hist.history["loss"], rtol=RTOL, atol=ATOL
    )


def test_gradient_clipping_across_replicas_mixed_float16(mirrored_strategy):
    # The loss-scaled gradients are unscaled before the global clip; float16
    # forward passes on different batch splits differ by rounding only.
    keras.config.set_dtype_policy("mixed_float16")
    x, y = regression_data(n=64)
    keras.utils.set_random_seed(21)
    start = regressor().get_weights()
    results = []
    for strategy in (tf.distribute.get_strategy(), mirrored_strategy(2)):
        with strategy.scope():
            net = regressor()
            net.set_weights(start)
            model = tfk.Model(net)
            model.compile(optimizer=keras.optimizers.SGD(0.5, global_clipnorm=0.1), loss="mse")
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        hist = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
        results.append((model.get_weights(), hist.history["loss"]))
    (single, single_loss), (multi, multi_loss) = results
    for i, (a, b) in enumerate(zip(multi, single)):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-4, err_msg=f"weight {i}")
    np.testing.assert_allclose(multi_loss, single_loss, rtol=1e-3, atol=ATOL)


def test_mixed_float16_overflow_skipped_across_replicas_with_clipping(mirrored_strategy):
    keras.config.set_dtype_policy("mixed_float16")
    x, y = regression_data(n=16)
    with mirrored_strategy(2).scope():
        model = tfk.Model(regressor())
        model.compile(optimizer=keras.optimizers.SGD(0.01, global_clipnorm=0.1), loss="mse")
    model.train_on_batch(x, y)
    before = model.get_weights()
    scale = float(model.optimizer.dynamic_scale.numpy())
    model.train_on_batch(x, np.full_like(y, 1e30))
    for b, a in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert float(model.optimizer.dynamic_scale.numpy()) == scale / 2
