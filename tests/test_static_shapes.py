"""Static-shape mode (TPUs): every batch one shape, results exact."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from tolerances import ATOL

import tfk_trainer as tfk

N, D, C, B = 1001, 5, 4, 64


class ShapeRecorder(keras.layers.Layer):
    """Records the static batch dimension each trace sees."""

    def __init__(self, log, **kwargs):
        super().__init__(**kwargs)
        self.record = log.append  # a bound method: Keras would copy a plain list

    def call(self, inputs):
        if isinstance(inputs, tf.Tensor) and not tf.executing_eagerly():  # traced steps only
            self.record(inputs.shape[0])
        return inputs


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D)).astype("float32")
    return x, rng.integers(0, C, N), rng.uniform(0.5, 2.0, N).astype("float32")


def _model(static, log=None, strategy=None, remainder="drop"):
    def build():
        keras.utils.set_random_seed(5)
        layers = [keras.Input((D,))]
        if log is not None:
            layers.append(ShapeRecorder(log))
        layers += [
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(C, activation="softmax"),
        ]
        model = tfk.Model(
            keras.Sequential(layers), static_shapes=static, static_remainder=remainder
        )
        model.compile(
            "adam",
            "sparse_categorical_crossentropy",
            metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")],
            weighted_metrics=["accuracy"],
            steps_per_execution=3,
        )
        return model

    if strategy is None:
        return build()
    with strategy.scope():
        return build()


@pytest.mark.parametrize("replicas", [1, 2])
def test_evaluate_and_predict_are_exact_with_padding(replicas, mirrored_strategy):
    x, y, sw = _data()
    dynamic = _model(static=False)
    strategy = mirrored_strategy(replicas) if replicas > 1 else None
    static = _model(static=True, strategy=strategy)
    static.set_weights(dynamic.get_weights())
    expected = dynamic.evaluate(x, y, sample_weight=sw, batch_size=B, return_dict=True, verbose=0)
    got = static.evaluate(x, y, sample_weight=sw, batch_size=B, return_dict=True, verbose=0)
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, err_msg=key, atol=ATOL)
    np.testing.assert_allclose(
        static.predict(x, batch_size=B, verbose=0),
        dynamic.predict(x, batch_size=B, verbose=0),
        rtol=1e-5,
        atol=1e-7,
    )


def test_training_batches_all_have_the_static_shape_and_drop_the_remainder():
    x, y, _ = _data()
    log = []
    model = _model(static=True, log=log)
    log.clear()  # Keras traced the layer once with an unknown batch while building
    model.fit(x, y, batch_size=B, epochs=2, verbose=0)
    assert log and set(log) == {B}
    assert int(model.optimizer.iterations.numpy()) == 2 * (N // B)


def test_wrap_completes_the_last_batch():
    x, y, _ = _data()
    log = []
    model = _model(static=True, log=log, remainder="wrap")
    log.clear()
    model.fit(x, y, batch_size=B, epochs=1, verbose=0)
    assert set(log) == {B}
    assert int(model.optimizer.iterations.numpy()) == -(-N // B)


def test_static_mode_for_a_dataset_and_a_generator():
    x, y, _ = _data()
    dynamic = _model(static=False)
    static = _model(static=True)
    expected = dynamic.evaluate(x, y, batch_size=B, return_dict=True, verbose=0)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(B)

    def gen():
        for i in range(0, N, B):
            yield x[i : i + B], y[i : i + B]

    for source in (ds, gen()):
        got = static.evaluate(source, return_dict=True, verbose=0)
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, err_msg=key, atol=ATOL)
    np.testing.assert_allclose(
        static.predict(ds, verbose=0), dynamic.predict(x, batch_size=B, verbose=0), rtol=1e-5, atol=ATOL
    )


def test_static_batch_must_divide_across_replicas(mirrored_strategy):
    x, y, _ = _data()
    model = _model(static=True, strategy=mirrored_strategy(2))
    with pytest.raises(ValueError, match="divisible by 2"):
        model.fit(x, y, batch_size=63, verbose=0)


def test_bad_static_arguments():
    with pytest.raises(ValueError, match="static_remainder"):
        tfk.Model(keras.Sequential([keras.layers.Dense(1)]), static_remainder="pad")
    with pytest.raises(ValueError, match="static_shapes"):
        tfk.Model(keras.Sequential([keras.layers.Dense(1)]), static_shapes="yes")


def test_the_static_wrapper_reads_only_the_adapter_interface():
    """`StaticShapeAdapter` takes its batch size from `first_batch` and forwards
    `relax_all_dims`: both declared on `DataAdapter`, so any adapter can be wrapped."""
    from tfk_trainer.data.base import DataAdapter
    from tfk_trainer.data.static import StaticShapeAdapter

    first = (np.zeros((6, D), "float32"), np.zeros((6,), "int64"))

    class Source(DataAdapter):
        relaxed = False

        def get_dataset(self, *, repeat=False, first_epoch=0):
            raise AssertionError("the batch size must come from first_batch, not a read")

        @property
        def num_batches(self):
            return None

        @property
        def first_batch(self):
            return first

        def relax_all_dims(self):
            self.relaxed = True

    source = Source()
    wrapped = StaticShapeAdapter(source, "pad")
    assert wrapped.batch_size == 6
    assert wrapped.first_batch is first
    wrapped.relax_all_dims()
    assert source.relaxed

    # The same through the factory, on a generator whose later batch has other dims.
    batches = [(np.ones((4, 3), "float32"),), (np.ones((4, 5), "float32"),)]
    adapter = tfk.data.get_adapter(lambda: iter(batches), static="drop")
    assert isinstance(adapter, StaticShapeAdapter)
    assert adapter.batch_size == 4
    assert adapter.get_dataset().element_spec[0].shape.as_list() == [4, 3]
    adapter.relax_all_dims()  # what multi-worker strategies get
    assert adapter.get_dataset().element_spec[0].shape.as_list() == [4, None]
