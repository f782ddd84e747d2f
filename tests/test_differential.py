"""Differential tests: `tfk.Model(net).fit` against `keras.Model.fit`.

Each test builds the same Keras network twice with identical starting weights,
trains one copy with Keras (the reference) and the other with tfk_trainer on
the same data with `shuffle=False`, and asserts that the history (keys, key
order, values), the final weights, and evaluate/predict results agree.

Where Keras 3.15 is known to be wrong (duplicated entries in the list form of
`evaluate`/`*_on_batch` when `weighted_metrics` repeat a name; it cannot run
`steps_per_execution > 1` under MirroredStrategy) the tests compare against
the form Keras gets right (the dict form, or a default-strategy run).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from tolerances import ATOL, ATOL_MULTI, RTOL, assert_dict_close, assert_history_equal

import tfk_trainer as tfk

# -- data ----------------------------------------------------------------------


def _features(n: int, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype("float32")


def sparse_data(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = _features(n, seed=seed)
    w = np.random.default_rng(seed + 100).normal(size=(6, 3)).astype("float32")
    return x, np.argmax(x @ w, axis=1).astype("int64")


def binary_data(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = _features(n, seed=seed)
    # Unbalanced (about a third positive) so class_weight matters.
    y = (x[:, 0] + 0.5 * x[:, 1] > 0.45).astype("float32")
    return x, y.reshape(-1, 1)


def regression_data(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x = _features(n, seed=seed)
    y = np.sin(x[:, :1]) + 0.5 * x[:, 1:2] - 0.25 * x[:, 2:3] ** 2
    return x, y.astype("float32")


# -- networks --------------------------------------------------------------------


def classifier(num_classes: int = 3) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(num_classes, activation="softmax"),
        ]
    )


def binary_classifier() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )


def regressor(batch_norm: bool = False) -> keras.Model:
    layers = [keras.Input((6,)), keras.layers.Dense(8, activation="tanh")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    layers.append(keras.layers.Dense(1))
    return keras.Sequential(layers)


def dict_input_net() -> keras.Model:
    a = keras.Input((4,), name="a")
    b = keras.Input((2,), name="b")
    h = keras.layers.Concatenate()([keras.layers.Dense(5, activation="relu")(a), b])
    out = keras.layers.Dense(3, activation="softmax")(h)
    return keras.Model({"a": a, "b": b}, out)


def twin(builder, seed: int = 7, **kwargs) -> tuple[keras.Model, keras.Model]:
    """Two copies of one network with identical starting weights."""
    keras.utils.set_random_seed(seed)
    ref = builder(**kwargs)
    keras.utils.set_random_seed(seed)
    other = builder(**kwargs)
    other.set_weights(ref.get_weights())
    return ref, other


def copy_of(ref: keras.Model, builder, **kwargs) -> keras.Model:
    net = builder(**kwargs)
    net.set_weights(ref.get_weights())
    return net


# -- assertions ------------------------------------------------------------------


def assert_weights_equal(
    ref_net: keras.Model, model: tfk.Model, rtol: float = RTOL, atol: float = ATOL
) -> None:
    """The trained network matches, both through tfk's and Keras's view of it."""
    expected = [v.numpy() for v in ref_net.trainable_weights + ref_net.non_trainable_weights]
    got = model.get_weights()
    assert [w.shape for w in got] == [w.shape for w in expected]
    for i, (g, e) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"weight {i}")
    for i, (g, e) in enumerate(zip(model.network.get_weights(), ref_net.get_weights())):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"network weight {i}")



def assert_eval_equal(ref_net, model, x, y, rtol=RTOL, atol=ATOL, **kwargs) -> None:
    """evaluate(return_dict=True) matches, with Keras's sorted key order."""
    expected = ref_net.evaluate(x, y, verbose=0, return_dict=True, **kwargs)
    got = model.evaluate(x, y, verbose=0, return_dict=True, **kwargs)
    assert list(got) == list(expected)
    assert_dict_close(got, expected, rtol, atol)


def assert_predict_equal(ref_net, model, x, rtol=RTOL, atol=ATOL, **kwargs) -> None:
    expected = ref_net.predict(x, verbose=0, **kwargs)
    got = model.predict(x, verbose=0, **kwargs)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def fit_both(ref_net, net, compile_kwargs: dict, fit_kwargs: dict, make_optimizer):
    """Compiles and fits both copies; returns (keras_history, tfk_model, tfk_history)."""
    ref_net.compile(optimizer=make_optimizer(), **compile_kwargs)
    ref_hist = ref_net.fit(verbose=0, **fit_kwargs)
    model = tfk.Model(net)
    model.compile(optimizer=make_optimizer(), **compile_kwargs)
    hist = model.fit(verbose=0, **fit_kwargs)
    return ref_hist, model, hist


def sgd():
    return keras.optimizers.SGD(learning_rate=0.1, momentum=0.5)


def adam():
    return keras.optimizers.Adam(learning_rate=0.01)


# -- 1. sparse classification ----------------------------------------------------


def test_sparse_classification_accuracy():
    x, y = sparse_data()
    ref_net, net = twin(classifier)
    ref_hist, model, hist = fit_both(
        ref_net,
        net,
        dict(loss="sparse_categorical_crossentropy", metrics=["accuracy"]),
        dict(x=x, y=y, batch_size=32, epochs=3, shuffle=False),
        adam,
    )
    assert list(hist.history) == ["accuracy", "loss"]
    assert_history_equal(ref_hist, hist)
    assert_weights_equal(ref_net, model)
    assert_eval_equal(ref_net, model, x, y, batch_size=32)
    assert_predict_equal(ref_net, model, x, batch_size=32)


# -- 2. one-hot labels, "acc" ----------------------------------------------------


def test_categorical_one_hot_acc_key():
    x, y = sparse_data()
    y = np.eye(3, dtype="float32")[y]
    ref_net, net = twin(classifier)
    ref_hist, model, hist = fit_both(
        ref_net,
        net,
        dict(loss="categorical_crossentropy", metrics=["acc"]),
        dict(x=x, y=y, batch_size=32, epochs=2, shuffle=False),
        adam,
    )
    assert list(hist.history) == ["acc", "loss"]
    assert_history_equal(ref_hist, hist)
    assert_weights_equal(ref_net, model)
    assert_eval_equal(ref_net, model, x, y, batch_size=50)


# -- 3. binary with class_weight -------------------------------------------------


@pytest.mark.parametrize("label_shape", ["column", "flat"])
def test_binary_class_weight(label_shape):
    x, y = binary_data()
    if label_shape == "flat":
        y = y.reshape(-1)
    ref_net, net = twin(binary_classifier)
    ref_hist, model, hist = fit_both(
        ref_net,
        net,
        dict(loss="binary_crossentropy", metrics=["accuracy"]),
        dict(x=x, y=y, batch_size=32, epochs=2, shuffle=False, class_weight={0: 1.0, 1: 3.0}),
        sgd,
    )
    assert list(hist.history) == ["accuracy", "loss"]
    assert_history_equal(ref_hist, hist)
    assert_weights_equal(ref_net, model)
    assert_eval_equal(ref_net, model, x, y, batch_size=64)
    assert_predict_equal(ref_net, model, x)
    # class_weight on a single batch, too.
    cw = {0: 1.0, 1: 3.0}
    assert_dict_close(
        model.train_on_batch(x[:40], y[:40], class_weight=cw, return_dict=True),
        ref_net.train_on_batch(x[:40], y[:40], class_weight=cw, return_dict=True),
    )
    assert_weights_equal(ref_net, model)


# -- 4. regression with validation_split -----------------------------------------


@pytest.mark.parametrize("batch_norm", [False, True], ids=["dense", "batchnorm"])
def test_regression_validation_split(batch_norm):
    x, y = regression_data()
    ref_net, net = twin(regressor, batch_norm=batch_norm)
    ref_hist, model, hist = fit_both(
        ref_net,
        net,
        dict(loss="mse", metrics=["mae"]),
        dict(x=x, y=y, batch_size=32, epochs=2, shuffle=False, validation_split=0.25),
        adam,
    )
    assert list(hist.history) == ["loss", "mae", "val_loss", "val_mae"]
    assert_history_equal(ref_hist, hist)
    assert_weights_equal(ref_net, model)
    assert_eval_equal(ref_net, model, x, y, batch_size=32)


# -- 5. sample_weight with metrics and weighted_metrics ---------------------------


def test_sample_weight_weighted_metrics_keys():
    x, y = regression_data()
    sw = np.random.default_rng(3).uniform(0.1, 2.0, size=len(x)).astype("float32")
    ref_net, net = twin(regressor)
    ref_hist, model, hist = fit_both(
        ref_net,
        net,
        dict(loss="mse", metrics=["mae"], weighted_metrics=["mae"]),
        dict(
            x=x,
            y=y,
            sample_weight=sw,
            batch_size=32,
            epochs=2,
            shuffle=False,
            validation_data=(x[:40], y[:40], sw[:40]),
        ),
        sgd,
    )
    # Keras 3.15 names the weighted copy "weighted_mae" (checked against Keras).
    assert list(ref_hist.history) == [
        "loss",
        "mae",
        "val_loss",
        "val_mae",
        "val_weighted_mae",
        "weighted_mae",
    ]
    assert_history_equal(ref_hist, hist)
    # The weighted and unweighted values really differ.
    assert not np.allclose(hist.history["mae"], hist.history["weighted_mae"])
    assert_weights_equal(ref_net, model)
    assert_eval_equal(ref_net, model, x, y, batch_size=32, sample_weight=sw)
    assert model.metrics_names == ["loss", "mae", "weighted_mae"]


# -- 6. tf.data.Dataset of (x, y, sample_weight) ---------------------------------


def test_dataset_with_sample_weights():
    x, y = sparse_data(n=150)
    sw = np.random.default_rng(4).uniform(0.0, 2.0, size=len(x)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y, sw)).batch(32)
    val_ds = tf.data.Dataset.from_tensor_slices((x[:50], y[:50])).batch(16)
    ref_net, net = twin(classifier)
    ref_hist, model, hist = fit_both(
        ref_net,
        net,
        dict(
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            weighted_metrics=["accuracy"],
        ),
        dict(x=ds, epochs=2, validation_data=val_ds),
        adam,
    )
    assert "weighted_accuracy" in hist.history
    assert_history_equal(ref_hist, hist)
    assert_weights_equal(ref_net, model)
    expected = ref_net.evaluate(ds, verbose=0, return_dict=True)
    got = model.evaluate(ds, verbose=0, return_dict=True)
    assert list(got) == list(expected)
    assert_dict_close(got, expected)
    np.testing.assert_allclose(
        model.predict(ds, verbose=0), ref_net.predict(ds, verbose=0), rtol=RTOL, atol=ATOL
    )


# -- 7. steps_per_execution not dividing the epoch -------------------------------


def test_steps_per_execution_partial_last_batch():
    x, y = sparse_data(n=205)  # 7 batches of 32, the last holds 13
    ref_net, net = twin(classifier)
    compile_kwargs = dict(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    fit_kwargs = dict(x=x, y=y, batch_size=32, epochs=2, shuffle=False, validation_split=0.2)
    ref_net.compile(optimizer=sgd(), steps_per_execution=1, **compile_kwargs)
    ref_hist = ref_net.fit(verbose=0, **fit_kwargs)
    model = tfk.Model(net)
    model.compile(optimizer=sgd(), steps_per_execution=4, **compile_kwargs)
    hist = model.fit(verbose=0, **fit_kwargs)
    assert_history_equal(ref_hist, hist)
    assert_weights_equal(ref_net, model)
    assert_eval_equal(ref_net, model, x, y, batch_size=32)
    assert_predict_equal(ref_net, model, x, batch_size=32)

    # And Keras with the same steps_per_execution agrees on the default strategy.
    keras_spe, _ = twin(classifier)
    keras_spe.compile(optimizer=sgd(), steps_per_execution=4, **compile_kwargs)
    assert_history_equal(keras_spe.fit(verbose=0, **fit_kwargs), hist)


# -- 8. validation_freq ----------------------------------------------------------


@pytest.mark.parametrize("validation_freq", [2, [1, 3]], ids=["every2", "list1_3"])
def test_validation_freq(validation_freq):
    x, y = regression_data(n=160)
    xv, yv = regression_data(n=48, seed=1)
    ref_net, net = twin(regressor)
    ref_hist, model, hist = fit_both(
        ref_net,
        net,
        dict(loss="mse", metrics=["mae"]),
        dict(
            x=x,
            y=y,
            batch_size=32,
            epochs=4,
            shuffle=False,
            validation_data=(xv, yv),
            validation_freq=validation_freq,
        ),
        sgd,
    )
    assert hist.epoch == [0, 1, 2, 3]
    assert len(hist.history["loss"]) == 4
    assert len(hist.history["val_loss"]) == 2
    assert_history_equal(ref_hist, hist)
    assert_weights_equal(ref_net, model)


# -- 9. initial_epoch ------------------------------------------------------------


def test_initial_epoch():
    x, y = sparse_data(n=128)
    ref_net, net = twin(classifier)
    ref_hist, model, hist = fit_both(
        ref_net,
        net,
        dict(loss="sparse_categorical_crossentropy", metrics=["accuracy"]),
        dict(x=x, y=y, batch_size=32, epochs=4, initial_epoch=2, shuffle=False),
        adam,
    )
    assert ref_hist.epoch == [2, 3]
    assert hist.epoch == [2, 3]
    assert_history_equal(ref_hist, hist)
    assert_weights_equal(ref_net, model)


# -- 10. jit_compile=True --------------------------------------------------------


def test_jit_compile_true():
    x, y = sparse_data(n=160)
    ref_net, net = twin(classifier)
    no_jit_net = copy_of(ref_net, classifier)
    compile_kwargs = dict(
        loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=True
    )
    fit_kwargs = dict(x=x, y=y, batch_size=32, epochs=2, shuffle=False)
    ref_hist, model, hist = fit_both(ref_net, net, compile_kwargs, fit_kwargs, adam)
    assert_history_equal(ref_hist, hist, atol=1e-5)
    assert_weights_equal(ref_net, model, atol=1e-5)
    assert_eval_equal(ref_net, model, x, y, atol=1e-5, batch_size=32)
    assert_predict_equal(ref_net, model, x, atol=1e-5, batch_size=48)

    # tfk with XLA agrees with tfk without it.
    no_jit = tfk.Model(no_jit_net)
    no_jit.compile(optimizer=adam(), **{**compile_kwargs, "jit_compile": False})
    assert_history_equal(no_jit.fit(verbose=0, **fit_kwargs), hist, rtol=1e-5, atol=1e-5)
    for a, b in zip(no_jit.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# -- 11. evaluate / predict / *_on_batch -----------------------------------------


def test_evaluate_forms():
    x, y = sparse_data(n=100)
    ref_net, net = twin(classifier)
    ref_net.compile(optimizer=sgd(), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model = tfk.Model(net)
    model.compile(optimizer=sgd(), loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    expected = ref_net.evaluate(x, y, batch_size=30, verbose=0)
    got = model.evaluate(x, y, batch_size=30, verbose=0)
    assert isinstance(got, list) and len(got) == 2
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    assert model.metrics_names == ["loss", "accuracy"]
    assert_eval_equal(ref_net, model, x, y, batch_size=30)


def test_evaluate_scalar_without_metrics():
    x, y = regression_data(n=90)
    ref_net, net = twin(regressor)
    ref_net.compile(optimizer=sgd(), loss="mse")
    model = tfk.Model(net)
    model.compile(optimizer=sgd(), loss="mse")
    expected = ref_net.evaluate(x, y, batch_size=32, verbose=0)
    got = model.evaluate(x, y, batch_size=32, verbose=0)
    assert np.ndim(got) == 0 and not isinstance(got, (list, dict))
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    got_dict = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert list(got_dict) == ["loss"]
    np.testing.assert_allclose(got_dict["loss"], expected, rtol=RTOL, atol=ATOL)


def test_evaluate_weighted_metrics_list_follows_metrics_names():
    """Keras duplicates an entry of the list here; tfk's list follows metrics_names."""
    x, y = regression_data(n=100)
    sw = np.random.default_rng(5).uniform(0.1, 2.0, size=len(x)).astype("float32")
    ref_net, net = twin(regressor)
    kwargs = dict(loss="mse", metrics=["mae"], weighted_metrics=["mae"])
    ref_net.compile(optimizer=sgd(), **kwargs)
    model = tfk.Model(net)
    model.compile(optimizer=sgd(), **kwargs)
    assert_eval_equal(ref_net, model, x, y, batch_size=32, sample_weight=sw)
    as_dict = model.evaluate(x, y, batch_size=32, sample_weight=sw, verbose=0, return_dict=True)
    as_list = model.evaluate(x, y, batch_size=32, sample_weight=sw, verbose=0)
    assert model.metrics_names == ["loss", "mae", "weighted_mae"]
    np.testing.assert_allclose(as_list, [as_dict[k] for k in model.metrics_names], rtol=1e-7, atol=ATOL)


@pytest.mark.parametrize("batch_size", [None, 32, 48])
def test_predict_values_and_shape(batch_size):
    x, _ = sparse_data(n=101)
    ref_net, net = twin(classifier)
    model = tfk.Model(net)
    expected = ref_net.predict(x, batch_size=batch_size, verbose=0)
    got = model.predict(x, batch_size=batch_size, verbose=0)
    assert got.shape == (101, 3)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        model.predict_on_batch(x[:17]), ref_net.predict_on_batch(x[:17]), rtol=RTOL, atol=ATOL
    )
    assert model.predict_on_batch(x[:17]).shape == (17, 3)


def test_train_and_test_on_batch_plain_metrics():
    x, y = sparse_data(n=64)
    ref_net, net = twin(classifier)
    kwargs = dict(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    ref_net.compile(optimizer=adam(), **kwargs)
    model = tfk.Model(net)
    model.compile(optimizer=adam(), **kwargs)
    for lo, hi in ((0, 32), (32, 64), (0, 20)):
        xb, yb = x[lo:hi], y[lo:hi]
        np.testing.assert_allclose(
            model.train_on_batch(xb, yb), ref_net.train_on_batch(xb, yb), rtol=RTOL, atol=ATOL
        )
        assert_dict_close(
            model.test_on_batch(xb, yb, return_dict=True),
            ref_net.test_on_batch(xb, yb, return_dict=True),
        )
        np.testing.assert_allclose(
            model.test_on_batch(xb, yb), ref_net.test_on_batch(xb, yb), rtol=RTOL, atol=ATOL
        )
    got = model.train_on_batch(x, y, return_dict=True)
    expected = ref_net.train_on_batch(x, y, return_dict=True)
    assert_dict_close(got, expected)
    assert_weights_equal(ref_net, model)
    np.testing.assert_allclose(
        model.predict_on_batch(x), ref_net.predict_on_batch(x), rtol=RTOL, atol=ATOL
    )


def test_train_and_test_on_batch_weighted_metrics():
    x, y = regression_data(n=48)
    sw = np.random.default_rng(6).uniform(0.1, 2.0, size=len(x)).astype("float32")
    ref_net, net = twin(regressor)
    kwargs = dict(loss="mse", metrics=["mae"], weighted_metrics=["mae"])
    ref_net.compile(optimizer=sgd(), **kwargs)
    model = tfk.Model(net)
    model.compile(optimizer=sgd(), **kwargs)
    for lo, hi in ((0, 16), (16, 48)):
        xb, yb, swb = x[lo:hi], y[lo:hi], sw[lo:hi]
        expected = ref_net.train_on_batch(xb, yb, sample_weight=swb, return_dict=True)
        got = model.train_on_batch(xb, yb, sample_weight=swb, return_dict=True)
        assert_dict_close(got, expected)
        expected = ref_net.test_on_batch(xb, yb, sample_weight=swb, return_dict=True)
        got = model.test_on_batch(xb, yb, sample_weight=swb, return_dict=True)
        assert_dict_close(got, expected)
        as_list = model.test_on_batch(xb, yb, sample_weight=swb)
        assert model.metrics_names == ["loss", "mae", "weighted_mae"]
        np.testing.assert_allclose(as_list, [got[k] for k in model.metrics_names], rtol=1e-7, atol=ATOL)
    assert_weights_equal(ref_net, model)


# -- 12. MirroredStrategy --------------------------------------------------------


@pytest.mark.parametrize("weighting", ["plain", "sample_weight"])
def test_mirrored_two_replicas_steps_per_execution(mirrored_strategy, weighting):
    # 209 * 0.8 -> 167 training samples: 5 batches of 32 and one of 7, split 4/3
    # (uneven); 42 validation samples: 32 + 10.
    x, y = sparse_data(n=209)
    fit_kwargs = dict(x=x, y=y, batch_size=32, epochs=2, shuffle=False, validation_split=0.2)
    compile_kwargs = dict(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    eval_kwargs = dict(batch_size=32)
    if weighting == "sample_weight":
        sw = np.random.default_rng(8).uniform(0.0, 2.0, size=len(x)).astype("float32")
        fit_kwargs["sample_weight"] = sw
        compile_kwargs["weighted_metrics"] = ["accuracy"]
        eval_kwargs["sample_weight"] = sw
    keras.utils.set_random_seed(11)
    ref_net = classifier()
    ref_net.compile(optimizer=sgd(), **compile_kwargs)
    ref_hist = ref_net.fit(verbose=0, **fit_kwargs)

    strategy = mirrored_strategy(2)
    keras.utils.set_random_seed(11)
    start = classifier().get_weights()
    with strategy.scope():
        net = classifier()
        net.set_weights(start)
        model = tfk.Model(net)
        model.compile(optimizer=sgd(), steps_per_execution=4, **compile_kwargs)
    assert model.distribute_strategy.num_replicas_in_sync == 2
    hist = model.fit(verbose=0, **fit_kwargs)
    assert_history_equal(ref_hist, hist, atol=ATOL_MULTI)
    assert_weights_equal(ref_net, model, atol=ATOL_MULTI)
    assert_eval_equal(ref_net, model, x, y, atol=ATOL_MULTI, **eval_kwargs)
    assert_predict_equal(ref_net, model, x, atol=ATOL_MULTI, batch_size=32)


# 205 = 6 * 32 + 13: the last batch splits 4/3/3/3; 193 = 6 * 32 + 1: three
# replicas get an empty share of the last batch.
@pytest.mark.parametrize("num_samples", [205, 193])
def test_mirrored_four_replicas_uneven_last_batch(mirrored_strategy, num_samples):
    x, y = sparse_data(n=num_samples)
    fit_kwargs = dict(x=x, y=y, batch_size=32, epochs=2, shuffle=False)
    compile_kwargs = dict(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    keras.utils.set_random_seed(12)
    ref_net = classifier()
    ref_net.compile(optimizer=sgd(), **compile_kwargs)
    ref_hist = ref_net.fit(verbose=0, **fit_kwargs)

    strategy = mirrored_strategy(4)
    keras.utils.set_random_seed(12)
    start = classifier().get_weights()
    with strategy.scope():
        net = classifier()
        net.set_weights(start)
        model = tfk.Model(net)
        model.compile(optimizer=sgd(), steps_per_execution=4, **compile_kwargs)
    assert model.distribute_strategy.num_replicas_in_sync == 4
    hist = model.fit(verbose=0, **fit_kwargs)
    assert_history_equal(ref_hist, hist, atol=ATOL_MULTI)
    assert_weights_equal(ref_net, model, atol=ATOL_MULTI)
    assert_eval_equal(ref_net, model, x, y, atol=ATOL_MULTI, batch_size=32)
    # Predictions come back in input order, partial last batch included.
    assert_predict_equal(ref_net, model, x, atol=ATOL_MULTI, batch_size=32)
    assert_predict_equal(ref_net, model, x[:7], atol=ATOL_MULTI, batch_size=32)


# -- 13. run_eagerly -------------------------------------------------------------


def test_run_eagerly_matches_compiled():
    x, y = sparse_data(n=96)
    fit_kwargs = dict(x=x, y=y, batch_size=32, epochs=2, shuffle=False, validation_split=0.25)
    compile_kwargs = dict(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    ref_net, net = twin(classifier)
    eager_net = copy_of(net, classifier)
    ref_net.compile(optimizer=adam(), **compile_kwargs)
    ref_hist = ref_net.fit(verbose=0, **fit_kwargs)

    compiled = tfk.Model(net)
    compiled.compile(optimizer=adam(), **compile_kwargs)
    compiled_hist = compiled.fit(verbose=0, **fit_kwargs)
    eager = tfk.Model(eager_net)
    # Eagerly, and several steps per (eager) execution: the same numbers.
    eager.compile(optimizer=adam(), run_eagerly=True, steps_per_execution=3, **compile_kwargs)
    eager_hist = eager.fit(verbose=0, **fit_kwargs)

    assert_history_equal(compiled_hist, eager_hist)
    assert_history_equal(ref_hist, eager_hist)
    assert_weights_equal(ref_net, eager)
    for a, b in zip(eager.get_weights(), compiled.get_weights()):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    assert_dict_close(
        eager.evaluate(x, y, verbose=0, return_dict=True),
        compiled.evaluate(x, y, verbose=0, return_dict=True),
    )
    np.testing.assert_allclose(
        eager.predict(x, batch_size=40, verbose=0),
        compiled.predict(x, batch_size=40, verbose=0),
        rtol=RTOL,
        atol=ATOL,
    )


# -- 14. dict inputs -------------------------------------------------------------


def test_dict_input_functional_model():
    x, y = sparse_data(n=150)
    inputs = {"a": x[:, :4], "b": x[:, 4:]}
    ref_net, net = twin(dict_input_net)
    ref_hist, model, hist = fit_both(
        ref_net,
        net,
        dict(loss="sparse_categorical_crossentropy", metrics=["accuracy"]),
        dict(x=inputs, y=y, batch_size=32, epochs=2, shuffle=False, validation_split=0.2),
        adam,
    )
    assert_history_equal(ref_hist, hist)
    assert_weights_equal(ref_net, model)
    assert_eval_equal(ref_net, model, inputs, y, batch_size=32)
    assert_predict_equal(ref_net, model, inputs, batch_size=64)
    np.testing.assert_allclose(
        model.predict_on_batch({"a": x[:5, :4], "b": x[:5, 4:]}),
        ref_net.predict_on_batch({"a": x[:5, :4], "b": x[:5, 4:]}),
        rtol=RTOL,
        atol=ATOL,
    )
