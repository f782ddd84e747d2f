"""Ragged and sparse inputs (issue 19 item 7): differential tests against `keras.Model.fit`.

Keras 3 trains on `tf.RaggedTensor` and `tf.SparseTensor` inputs (given
directly, or yielded by generators, `PyDataset`s and `tf.data` datasets) and
keeps SciPy sparse matrices sparse (a `tf.SparseTensor` per batch). Each test
here trains the same network from the same weights on the same data with
Keras and with tfk (`shuffle=False`) and compares the history, the final
weights and the evaluate/predict results, with an absolute tolerance.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from tolerances import ATOL, ATOL_MULTI, RTOL, assert_history_equal

import tfk_trainer as tfk
from tfk_trainer.engine import execution

WIDTH = 6  # the dense width of every ragged/sparse feature row


# -- data ----------------------------------------------------------------------------


def ragged_rows(n: int, seed: int = 0) -> tf.RaggedTensor:
    """`n` rows of 1..WIDTH float features."""
    rng = np.random.default_rng(seed)
    rows = [rng.normal(size=rng.integers(1, WIDTH + 1)).astype("float32") for _ in range(n)]
    return tf.ragged.constant(rows, dtype=tf.float32)


def sparse_dense(n: int, seed: int = 0) -> np.ndarray:
    """A dense `(n, WIDTH)` array that is about two thirds zeros."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, WIDTH)).astype("float32")
    x[rng.uniform(size=x.shape) < 0.65] = 0.0
    return x


def targets(dense: np.ndarray, seed: int = 1) -> np.ndarray:
    w = np.random.default_rng(seed).normal(size=(WIDTH, 1)).astype("float32")
    return (np.tanh(dense @ w) + 0.1).astype("float32")


def ragged_data(n: int = 22, seed: int = 0) -> tuple[tf.RaggedTensor, np.ndarray]:
    x = ragged_rows(n, seed)
    return x, targets(x.to_tensor(shape=[None, WIDTH]).numpy(), seed + 1)


def sparse_data(n: int = 22, seed: int = 0) -> tuple[tf.SparseTensor, np.ndarray]:
    dense = sparse_dense(n, seed)
    return tf.sparse.from_dense(dense), targets(dense, seed + 1)


def sparse_batches(n: int = 22, batch: int = 5, seed: int = 0) -> list[tuple]:
    dense = sparse_dense(n, seed)
    y = targets(dense, seed + 1)
    return [
        (tf.sparse.from_dense(dense[i : i + batch]), y[i : i + batch]) for i in range(0, n, batch)
    ]


# -- networks ------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="test_composite_inputs")
class ToDense(keras.layers.Layer):
    """Ragged or sparse rows to a dense `(batch, WIDTH)` tensor."""

    def call(self, x):
        if isinstance(x, tf.RaggedTensor):
            return x.to_tensor(shape=[None, WIDTH])
        if isinstance(x, tf.SparseTensor):
            return tf.sparse.to_dense(x)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], WIDTH)


class DensifyingNet(keras.Model):
    """A subclassed network that densifies its ragged/sparse input first."""

    def __init__(self):
        super().__init__()
        self.to_dense = ToDense()
        self.hidden = keras.layers.Dense(5, activation="tanh")
        self.out = keras.layers.Dense(1)

    def call(self, x):
        return self.out(self.hidden(self.to_dense(x)))


def ragged_functional() -> keras.Model:
    inputs = keras.Input(shape=(None,), ragged=True, dtype="float32")
    hidden = keras.layers.Dense(5, activation="tanh")(ToDense()(inputs))
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


def sparse_functional() -> keras.Model:
    """Dense takes the sparse input directly (a sparse matmul, as in Keras's tests)."""
    inputs = keras.Input(shape=(WIDTH,), sparse=True, dtype="float32")
    hidden = keras.layers.Dense(5, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


NETWORKS = {"subclass": DensifyingNet, "ragged_functional": ragged_functional}


def twin(make, seed: int = 7) -> tuple[keras.Model, keras.Model]:
    """Two copies of a network with the same starting weights."""
    keras.utils.set_random_seed(seed)
    a = make()
    b = make()
    for net in (a, b):
        build(net)
    b.set_weights(a.get_weights())
    return a, b


def build(net: keras.Model) -> None:
    """Creates a subclassed network's weights (functional ones have them already)."""
    if not net.weights:
        net(np.zeros((2, WIDTH), "float32"))


def sgd() -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(0.1)


def compiled_pair(make, strategy: tf.distribute.Strategy | None = None, **compile_kwargs):
    """`(keras reference, tfk model)` compiled alike; tfk under `strategy` if given."""
    ref_net, net = twin(make)
    kwargs = dict(loss="mse", metrics=["mae"], **compile_kwargs)
    ref_net.compile(optimizer=sgd(), **kwargs)
    if strategy is None:
        model = tfk.Model(net)
        model.compile(optimizer=sgd(), **kwargs)
        return ref_net, model
    start = net.get_weights()
    with strategy.scope():
        net = make()
        build(net)
        net.set_weights(start)
        model = tfk.Model(net)
        model.compile(optimizer=sgd(), **kwargs)
    return ref_net, model


def assert_weights_close(ref_net: keras.Model, model: tfk.Model, atol: float = ATOL) -> None:
    for a, b in zip(ref_net.get_weights(), model.get_weights()):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=atol)


def assert_outputs_close(got, expected, atol: float = ATOL) -> None:
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=RTOL, atol=atol)


def assert_matches_keras(ref_net, model, fit: dict, atol: float = ATOL) -> None:
    """`fit(**fit)` gives Keras's history and weights, then evaluate and predict on
    the same `x`, `y` (batches of 6) give Keras's numbers."""
    x, y = fit["x"], fit["y"]
    assert_history_equal(ref_net.fit(verbose=0, **fit), model.fit(verbose=0, **fit), atol=atol)
    assert_weights_close(ref_net, model, atol=atol)
    assert_outputs_close(
        model.evaluate(x, y, batch_size=6, verbose=0),
        ref_net.evaluate(x, y, batch_size=6, verbose=0),
        atol=atol,
    )
    assert_outputs_close(
        model.predict(x, batch_size=6, verbose=0),
        ref_net.predict(x, batch_size=6, verbose=0),
        atol=atol,
    )


# -- x given directly ----------------------------------------------------------------


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_ragged_x_matches_keras(network):
    x, y = ragged_data()
    ref_net, model = compiled_pair(NETWORKS[network])
    fit = dict(x=x, y=y, batch_size=5, epochs=2, shuffle=False)  # 22 rows: a partial batch
    ref = ref_net.fit(verbose=0, **fit)
    got = model.fit(verbose=0, **fit)
    assert_history_equal(ref, got)
    assert_weights_close(ref_net, model)
    assert_outputs_close(
        model.evaluate(x, y, batch_size=4, verbose=0),
        ref_net.evaluate(x, y, batch_size=4, verbose=0),
    )
    assert_outputs_close(
        model.predict(x, batch_size=4, verbose=0), ref_net.predict(x, batch_size=4, verbose=0)
    )


def test_ragged_x_shuffled_trains_on_every_row():
    """Shuffled batches gather ragged rows by index: same loss at the start as Keras's
    (evaluate before training), finite training, every row predicted in order."""
    x, y = ragged_data(n=30)
    ref_net, model = compiled_pair(DensifyingNet)
    before = model.evaluate(x, y, batch_size=7, verbose=0)
    assert_outputs_close(before, ref_net.evaluate(x, y, batch_size=7, verbose=0))
    hist = model.fit(x, y, batch_size=4, epochs=3, shuffle=True, verbose=0)
    assert np.all(np.isfinite(hist.history["loss"]))
    assert hist.history["loss"][-1] < before[0]
    dense = x.to_tensor(shape=[None, WIDTH])
    assert_outputs_close(model.predict(x, batch_size=8, verbose=0), model.network(dense))


@pytest.mark.parametrize("network", ["subclass", "sparse_functional"])
def test_sparse_x_matches_keras(network):
    make = DensifyingNet if network == "subclass" else sparse_functional
    x, y = sparse_data()
    ref_net, model = compiled_pair(make)
    fit = dict(x=x, y=y, batch_size=5, epochs=2, shuffle=False)
    assert_matches_keras(ref_net, model, fit)


def test_scipy_sparse_matches_keras():
    scipy_sparse = pytest.importorskip("scipy.sparse")
    dense = sparse_dense(23)
    y = targets(dense)
    x = scipy_sparse.csr_matrix(dense)
    ref_net, model = compiled_pair(sparse_functional)
    fit = dict(x=x, y=y, batch_size=5, epochs=2, shuffle=False, validation_split=0.2)
    assert_matches_keras(ref_net, model, fit)


def test_scipy_sparse_stays_sparse():
    """The model sees a `tf.SparseTensor` per batch, never a densified matrix."""
    scipy_sparse = pytest.importorskip("scipy.sparse")
    seen = []

    class Recorder(tfk.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x, training=False):
            seen.append(type(x))
            return self.dense(tf.sparse.to_dense(x))

    dense = sparse_dense(10)
    model = Recorder()
    model.compile(optimizer=sgd(), loss="mse")
    model.fit(scipy_sparse.coo_matrix(dense), targets(dense), batch_size=4, verbose=0)
    assert seen and set(seen) == {tf.SparseTensor}


def test_validation_split_ragged_matches_keras():
    x, y = ragged_data(n=25)
    ref_net, model = compiled_pair(DensifyingNet)
    fit = dict(x=x, y=y, batch_size=4, epochs=2, shuffle=False, validation_split=0.2)
    assert_history_equal(ref_net.fit(verbose=0, **fit), model.fit(verbose=0, **fit))
    assert_weights_close(ref_net, model)


# -- generators, PyDatasets, tf.data ---------------------------------------------------


def test_sparse_generator_matches_keras():
    batches = sparse_batches()
    ref_net, model = compiled_pair(DensifyingNet)
    ref = ref_net.fit((b for b in batches), epochs=1, verbose=0)
    got = model.fit((b for b in batches), epochs=1, verbose=0)
    assert_history_equal(ref, got)
    assert_weights_close(ref_net, model)
    assert_outputs_close(
        model.evaluate((b for b in batches), verbose=0),
        ref_net.evaluate((b for b in batches), verbose=0),
    )
    assert_outputs_close(
        model.predict((b for b in batches), verbose=0),
        ref_net.predict((b for b in batches), verbose=0),
    )


def test_scipy_generator_matches_keras():
    scipy_sparse = pytest.importorskip("scipy.sparse")
    batches = [
        (scipy_sparse.csr_matrix(tf.sparse.to_dense(x).numpy()), y) for x, y in sparse_batches()
    ]
    ref_net, model = compiled_pair(sparse_functional)
    ref = ref_net.fit((b for b in batches), epochs=1, verbose=0)
    got = model.fit((b for b in batches), epochs=1, verbose=0)
    assert_history_equal(ref, got)
    assert_weights_close(ref_net, model)


class RaggedPyDataset(keras.utils.PyDataset):
    def __init__(self, x: tf.RaggedTensor, y: np.ndarray, batch: int):
        super().__init__()
        self.x, self.y, self.batch = x, y, batch

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch)

    def __getitem__(self, i: int) -> tuple:
        lo, hi = i * self.batch, (i + 1) * self.batch
        return self.x[lo:hi], self.y[lo:hi]


def test_ragged_py_dataset_matches_keras():
    x, y = ragged_data()
    data = RaggedPyDataset(x, y, batch=5)
    ref_net, model = compiled_pair(DensifyingNet)
    fit = dict(x=data, epochs=2, shuffle=False)
    assert_history_equal(ref_net.fit(verbose=0, **fit), model.fit(verbose=0, **fit))
    assert_weights_close(ref_net, model)
    assert_outputs_close(model.predict(data, verbose=0), ref_net.predict(data, verbose=0))


def test_ragged_dataset_matches_keras():
    x, y = ragged_data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    assert isinstance(dataset.element_spec[0], tf.RaggedTensorSpec)
    ref_net, model = compiled_pair(ragged_functional)
    fit = dict(x=dataset, epochs=2, validation_data=dataset)
    assert_history_equal(ref_net.fit(verbose=0, **fit), model.fit(verbose=0, **fit))
    assert_weights_close(ref_net, model)
    assert_outputs_close(model.evaluate(dataset, verbose=0), ref_net.evaluate(dataset, verbose=0))
    assert_outputs_close(model.predict(dataset, verbose=0), ref_net.predict(dataset, verbose=0))


def test_sparse_dataset_matches_keras():
    dense = sparse_dense(22)
    y = targets(dense)
    dataset = tf.data.Dataset.from_tensor_slices((tf.sparse.from_dense(dense), y)).batch(5)
    ref_net, model = compiled_pair(sparse_functional)
    fit = dict(x=dataset, epochs=2)
    assert_history_equal(ref_net.fit(verbose=0, **fit), model.fit(verbose=0, **fit))
    assert_weights_close(ref_net, model)
    assert_outputs_close(model.predict(dataset, verbose=0), ref_net.predict(dataset, verbose=0))


def test_generator_changing_sparse_width_relaxes_spec():
    """A later sparse batch of another dense width relaxes that dim, as for dense batches."""
    rng = np.random.default_rng(3)

    def batches():
        for width in (3, 3, 5):
            dense = rng.normal(size=(4, width)).astype("float32")
            yield tf.sparse.from_dense(dense), dense.sum(axis=1, keepdims=True)

    class RowSum(tfk.Model):
        def __init__(self):
            super().__init__()
            self.scale = keras.layers.Dense(1)

        def call(self, x, training=False):
            return self.scale(tf.reshape(tf.sparse.reduce_sum(x, axis=1), [-1, 1]))

    model = RowSum()
    model.compile(optimizer=sgd(), loss="mse")
    hist = model.fit(batches, epochs=2, verbose=0)
    assert len(hist.history["loss"]) == 2
    assert model.predict(batches(), verbose=0).shape == (12, 1)


# -- *_on_batch --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ragged", "sparse"])
def test_on_batch_methods_match_keras(kind):
    x, y = ragged_data(n=8) if kind == "ragged" else sparse_data(n=8)
    ref_net, model = compiled_pair(DensifyingNet)
    for _ in range(2):
        assert_outputs_close(model.train_on_batch(x, y), ref_net.train_on_batch(x, y))
    assert_outputs_close(model.test_on_batch(x, y), ref_net.test_on_batch(x, y))
    assert_outputs_close(model.predict_on_batch(x), ref_net.predict_on_batch(x))
    assert_weights_close(ref_net, model)


# -- two replicas ------------------------------------------------------------------------


def test_mirrored_ragged_x_matches_keras(mirrored_strategy):
    x, y = ragged_data(n=23)
    ref_net, model = compiled_pair(DensifyingNet, strategy=mirrored_strategy(2))
    assert model.distribute_strategy.num_replicas_in_sync == 2
    fit = dict(x=x, y=y, batch_size=6, epochs=2, shuffle=False)
    assert_matches_keras(ref_net, model, fit, atol=ATOL_MULTI)


def test_mirrored_sparse_generator_and_ragged_dataset_match_keras(mirrored_strategy):
    strategy = mirrored_strategy(2)
    batches = sparse_batches(n=24, batch=6)
    ref_net, model = compiled_pair(DensifyingNet, strategy=strategy)
    ref = ref_net.fit((b for b in batches), epochs=1, verbose=0)
    assert_history_equal(ref, model.fit((b for b in batches), epochs=1, verbose=0), atol=ATOL_MULTI)
    assert_weights_close(ref_net, model, atol=ATOL_MULTI)
    assert_outputs_close(
        model.predict((b for b in batches), verbose=0),
        ref_net.predict((b for b in batches), verbose=0),
        atol=ATOL_MULTI,
    )

    x, y = ragged_data(n=24)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(6)
    ref_net, model = compiled_pair(ragged_functional, strategy=strategy)
    ref = ref_net.fit(dataset, epochs=2, verbose=0)
    assert_history_equal(ref, model.fit(dataset, epochs=2, verbose=0), atol=ATOL_MULTI)
    assert_weights_close(ref_net, model, atol=ATOL_MULTI)
    assert_outputs_close(
        model.evaluate(dataset, verbose=0), ref_net.evaluate(dataset, verbose=0), atol=ATOL_MULTI
    )


# -- XLA, static shapes, errors ------------------------------------------------------------


def test_auto_jit_turns_off_for_composite_inputs(monkeypatch):
    """Where "auto" means XLA (a GPU host), ragged/sparse inputs turn it off: XLA
    cannot take them. Simulated by making "auto" resolve to XLA."""
    monkeypatch.setattr(execution, "resolve_jit_compile", lambda *a, **k: True)
    x, y = ragged_data()
    model = tfk.Model(DensifyingNet())
    model.compile(optimizer=sgd(), loss="mse")  # jit_compile="auto"
    assert model._state.jit is True  # what "auto" means on this (simulated) host
    model.fit(x, y, batch_size=5, verbose=0)
    assert model._state.jit is False
    assert model._executor.train.jit_compile is False

    dense = tfk.Model(DensifyingNet())
    dense.compile(optimizer=sgd(), loss="mse")
    assert dense._state.compile_config.jit_compile == "auto"
    assert execution.composite_inputs_disable_xla(
        dense._state.compile_config, tf.RaggedTensorSpec([None, None], tf.float32)
    )
    assert not execution.composite_inputs_disable_xla(
        dense._state.compile_config, tf.TensorSpec([None, WIDTH], tf.float32)
    )


@pytest.mark.parametrize("kind", ["ragged", "sparse"])
def test_static_shapes_match_dynamic(kind):
    """Static-shape mode pads the last batch of evaluate/predict (empty ragged rows, a
    larger sparse dense shape) and drops it in training, without touching the values."""
    x, y = ragged_data(n=22) if kind == "ragged" else sparse_data(n=22)
    keras.utils.set_random_seed(5)
    a, b = twin(DensifyingNet)
    dynamic = tfk.Model(a, static_shapes=False)
    static = tfk.Model(b, static_shapes=True)
    for model in (dynamic, static):
        model.compile(optimizer=sgd(), loss="mse", metrics=["mae"])
    assert_outputs_close(
        static.evaluate(x, y, batch_size=5, verbose=0),
        dynamic.evaluate(x, y, batch_size=5, verbose=0),
    )
    assert_outputs_close(
        static.predict(x, batch_size=5, verbose=0), dynamic.predict(x, batch_size=5, verbose=0)
    )
    batches = sparse_batches(n=22, batch=5)
    assert_outputs_close(
        static.evaluate((b for b in batches), verbose=0),
        dynamic.evaluate((b for b in batches), verbose=0),
    )
    # Training drops the partial last batch (20 of 22 rows): as dynamic training on 20.
    fit = dict(batch_size=5, epochs=1, shuffle=False, verbose=0)
    hist = static.fit(x, y, **fit)
    first20 = x[:20] if kind == "ragged" else tf.sparse.slice(x, [0, 0], [20, WIDTH])
    assert_history_equal(dynamic.fit(first20, y[:20], **fit), hist)
    assert_weights_close(dynamic.network, static)


def test_unsupported_objects_still_name_the_argument():
    model = tfk.Model(DensifyingNet())
    model.compile(optimizer=sgd(), loss="mse")
    with pytest.raises(TypeError, match="`x`"):
        model.fit(object(), np.zeros((3, 1)), verbose=0)
    with pytest.raises(TypeError, match="`x` holds Python objects"):
        model.fit(np.array([[1.0], "a", None], dtype=object), np.zeros((3, 1)), verbose=0)
    with pytest.raises(ValueError, match="same number of samples"):
        model.fit(ragged_rows(5), np.zeros((4, 1), "float32"), verbose=0)


def mixed_inputs() -> keras.Model:
    tokens = keras.Input(shape=(None,), ragged=True, dtype="float32", name="tokens")
    counts = keras.Input(shape=(WIDTH,), sparse=True, dtype="float32", name="counts")
    extra = keras.Input(shape=(2,), dtype="float32", name="extra")
    joined = keras.layers.Concatenate()([ToDense()(tokens), keras.layers.Dense(3)(counts), extra])
    return keras.Model(
        {"tokens": tokens, "counts": counts, "extra": extra}, keras.layers.Dense(1)(joined)
    )


def test_dict_of_ragged_sparse_and_dense_matches_keras():
    """Each leaf of a dict is sliced by its own kind; the rows stay aligned."""
    tokens, y = ragged_data(n=21)
    x = {
        "tokens": tokens,
        "counts": tf.sparse.from_dense(sparse_dense(21, seed=4)),
        "extra": np.random.default_rng(5).normal(size=(21, 2)).astype("float32"),
    }
    ref_net, model = compiled_pair(mixed_inputs)
    fit = dict(x=x, y=y, batch_size=4, epochs=2, shuffle=False)
    assert_history_equal(ref_net.fit(verbose=0, **fit), model.fit(verbose=0, **fit))
    assert_weights_close(ref_net, model)
    assert_outputs_close(
        model.predict(x, batch_size=5, verbose=0), ref_net.predict(x, batch_size=5, verbose=0)
    )


def test_model_that_cannot_take_ragged_names_x_and_the_kind():
    net = keras.Sequential([keras.Input((WIDTH,)), keras.layers.Dense(1)])
    model = tfk.Model(net)
    model.compile(optimizer=sgd(), loss="mse")
    x, y = ragged_data(n=4)
    with pytest.raises(
        ValueError, match=r"`x` \(a batch shaped like the data: ragged \(None, None\)"
    ):
        model.fit(x, y, verbose=0)


def test_generator_switching_from_ragged_to_dense_is_named():
    def batches():
        yield tf.ragged.constant([[1.0, 2.0], [3.0]]), np.ones((2, 1), "float32")
        yield np.ones((2, 2), "float32"), np.ones((2, 1), "float32")

    model = tfk.Model(DensifyingNet())
    model.compile(optimizer=sgd(), loss="mse")
    with pytest.raises(ValueError, match=r"differ in rank or kind.*ragged float32\[2, None\]"):
        model.fit(batches(), verbose=0)
