"""sample_weight and class_weight: per sample, per timestep, sparse, one-hot."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfk_trainer as tfk

N, T, C = 64, 5, 3


def _seq_net(seed=2):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((T, 4)), keras.layers.Dense(C, activation="softmax")])


def _flat_net(seed=2):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(C, activation="softmax")])


def _compile(model):
    model.compile(
        "sgd",
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
        weighted_metrics=["accuracy"],
    )
    return model


def _fit(model, *args, **kwargs):
    return model.fit(*args, batch_size=16, epochs=2, shuffle=False, verbose=0, **kwargs).history


def _assert_histories_equal(got, expected):
    assert list(got) == list(expected)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-7, err_msg=key)


rng = np.random.default_rng(0)
X_SEQ = rng.normal(size=(N, T, 4)).astype("float32")
Y_SEQ = rng.integers(0, C, (N, T))
X = rng.normal(size=(N, 4)).astype("float32")
Y = rng.integers(0, C, N)


def test_temporal_sample_weight_matches_keras():
    sw = rng.uniform(0, 2, (N, T)).astype("float32")
    expected = _fit(_compile(_seq_net()), X_SEQ, Y_SEQ, sample_weight=sw)
    got = _fit(_compile(tfk.Model(_seq_net())), X_SEQ, Y_SEQ, sample_weight=sw)
    _assert_histories_equal(got, expected)


@pytest.mark.parametrize("one_hot", [False, True])
def test_class_weight_sparse_and_one_hot_match_keras(one_hot):
    y = keras.utils.to_categorical(Y, C) if one_hot else Y
    loss = "categorical_crossentropy" if one_hot else "sparse_categorical_crossentropy"
    cw = {0: 0.5, 2: 3.0}  # class 1 missing: weighs 1.0

    def compiled(model):
        model.compile("sgd", loss, metrics=["accuracy"], weighted_metrics=["accuracy"])
        return model

    expected = _fit(compiled(_flat_net()), X, y, class_weight=cw)
    got = _fit(compiled(tfk.Model(_flat_net())), X, y, class_weight=cw)
    _assert_histories_equal(got, expected)


def test_class_weight_reaches_weighted_metrics_only():
    cw = {0: 0.0, 1: 0.0, 2: 1.0}
    model = _compile(tfk.Model(_flat_net()))
    history = _fit(model, X, Y, class_weight=cw)
    # Unweighted accuracy ignores the weights, weighted accuracy only sees class 2.
    assert history["accuracy"] != history["weighted_accuracy"]


def test_temporal_sparse_class_weight_weights_each_timestep():
    """Sparse temporal labels carry an explicit final 1, as the Keras 3 API docs ask: (N, T, 1)."""
    cw = {0: 2.0, 1: 0.5, 2: 1.0}
    per_step = np.vectorize(cw.get)(Y_SEQ).astype("float32")
    expected = _fit(_compile(tfk.Model(_seq_net())), X_SEQ, Y_SEQ, sample_weight=per_step)
    got = _fit(_compile(tfk.Model(_seq_net())), X_SEQ, Y_SEQ[..., None], class_weight=cw)
    _assert_histories_equal(got, expected)


def test_out_of_range_class_ids_weigh_one():
    cw = {0: 2.0, 1: 0.5}  # labels include 2, above the largest key
    per_sample = np.array([cw.get(int(c), 1.0) for c in Y], "float32")
    expected = _fit(_compile(tfk.Model(_flat_net())), X, Y, sample_weight=per_sample)
    got = _fit(_compile(tfk.Model(_flat_net())), X, Y, class_weight=cw)
    _assert_histories_equal(got, expected)


def test_class_weight_with_a_dataset():
    cw = {0: 2.0, 1: 0.5, 2: 1.0}
    per_sample = np.array([cw[int(c)] for c in Y], "float32")
    expected = _fit(_compile(tfk.Model(_flat_net())), X, Y, sample_weight=per_sample)
    ds = tf.data.Dataset.from_tensor_slices((X, Y)).batch(16)
    got = _compile(tfk.Model(_flat_net())).fit(ds, epochs=2, verbose=0, class_weight=cw).history
    _assert_histories_equal(got, expected)


def test_sample_weight_of_the_wrong_length_is_a_clear_error():
    model = _compile(tfk.Model(_flat_net()))
    with pytest.raises(ValueError, match="sample_weight"):
        model.fit(X, Y, sample_weight=np.ones(N - 1), verbose=0)


@pytest.mark.parametrize(
    "class_weight, error",
    [([1.0, 2.0], TypeError), ({-1: 1.0}, ValueError), ({0: "heavy"}, TypeError), ({}, ValueError)],
)
def test_bad_class_weight(class_weight, error):
    model = _compile(tfk.Model(_flat_net()))
    with pytest.raises(error, match="class_weight"):
        model.fit(X, Y, class_weight=class_weight, verbose=0)
