"""The compiled execution: XLA on and off, the "auto" fallback, strategies, predict gathering."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf
from tolerances import ATOL

import tfk_trainer as tfk
from tfk_trainer.engine import execution, tuning


def _data(n=96, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype("float32"), rng.integers(0, classes, n)


def _net(d=6, classes=3, seed=7):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((d,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(classes, activation="softmax"),
        ]
    )


def _fit(model, x, y, **kwargs):
    model.compile(
        optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"], **kwargs
    )
    return model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history


def test_auto_resolves_off_on_cpu_and_under_mirrored(mirrored_strategy):
    default = tf.distribute.get_strategy()
    assert execution.resolve_jit_compile("auto", default, False) is False
    assert execution.resolve_jit_compile(True, default, False) is True
    assert execution.resolve_jit_compile(True, default, True) is False  # run_eagerly wins
    assert execution.resolve_jit_compile("auto", mirrored_strategy(2), False) is False
    with pytest.raises(ValueError, match="jit_compile=True"):
        execution.resolve_jit_compile(True, mirrored_strategy(2), False)


def test_jit_compile_true_matches_graph_mode():
    x, y = _data()
    plain = tfk.Model(_net())
    jitted = tfk.Model(_net())
    h_plain = _fit(plain, x, y, jit_compile=False)
    h_jit = _fit(jitted, x, y, jit_compile=True, steps_per_execution=3)
    assert jitted._executor.train.jit_compile is True
    for key in h_plain:
        np.testing.assert_allclose(h_jit[key], h_plain[key], rtol=1e-5, atol=1e-6)
    for a, b in zip(plain.get_weights(), jitted.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


class _HostOp(keras.layers.Layer):
    """A layer XLA cannot compile (a host Python function in the graph)."""

    def call(self, inputs):
        out = tf.numpy_function(lambda a: a, [inputs], tf.float32)
        return tf.ensure_shape(out, inputs.shape)


def test_auto_falls_back_once_with_a_warning(monkeypatch, caplog):
    """'auto' tries XLA where it resolves on, and falls back when XLA cannot compile."""
    monkeypatch.setattr(execution, "resolve_jit_compile", lambda *a: True)
    x, y = _data()

    def net():
        keras.utils.set_random_seed(3)
        return keras.Sequential(
            [keras.Input((6,)), _HostOp(), keras.layers.Dense(3, activation="softmax")]
        )

    model = tfk.Model(net())
    with caplog.at_level(logging.WARNING, logger="tfk_trainer"):
        history = _fit(model, x, y, jit_compile="auto", steps_per_execution=2)
    assert model._executor.train.jit_compile is False
    assert sum("XLA could not compile" in r.message for r in caplog.records) == 1
    assert int(model.optimizer.iterations.numpy()) == 2 * 6  # no step lost or repeated

    monkeypatch.undo()
    reference = tfk.Model(net())
    expected = _fit(reference, x, y, jit_compile=False, steps_per_execution=2)
    for key in expected:
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-6, atol=ATOL)


def test_one_device_strategy_matches_default():
    x, y = _data()
    base = tfk.Model(_net())
    expected = _fit(base, x, y, steps_per_execution=4)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = tfk.Model(_net())
        got = _fit(model, x, y, steps_per_execution=4)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=ATOL)


def test_predict_keeps_dict_and_nested_outputs_and_partial_batches():
    inputs = keras.Input((4,))
    a = keras.layers.Dense(2, name="a")(inputs)
    b = keras.layers.Dense(3, name="b")(inputs)
    net = keras.Model(inputs, {"a": a, "b": [b, b * 2.0]})
    model = tfk.Model(net)
    x = np.random.default_rng(0).normal(size=(37, 4)).astype("float32")
    out = model.predict(x, batch_size=8, verbose=0)
    direct = net(x)
    assert set(out) == {"a", "b"} and isinstance(out["b"], list) and len(out["b"]) == 2
    np.testing.assert_allclose(out["a"], direct["a"], rtol=1e-6, atol=ATOL)
    np.testing.assert_allclose(out["b"][1], direct["b"][1], rtol=1e-6, atol=ATOL)
    assert out["b"][0].shape == (37, 3)
    single = model.predict_on_batch(x[:5])
    np.testing.assert_allclose(single["a"], direct["a"][:5], rtol=1e-6, atol=ATOL)


def test_predict_without_compile_and_with_steps_per_execution():
    x, _ = _data(n=50)
    net = _net()
    model = tfk.Model(net)
    np.testing.assert_allclose(model.predict(x, batch_size=7, verbose=0), net(x), rtol=1e-6, atol=ATOL)
    model.compile(loss="sparse_categorical_crossentropy", steps_per_execution=3)
    np.testing.assert_allclose(model.predict(x, batch_size=7, verbose=0), net(x), rtol=1e-6, atol=ATOL)


def test_one_trace_per_function_across_ragged_last_batch_and_epochs():
    x, y = _data(n=100)
    model = tfk.Model(_net())
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", steps_per_execution=3)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    model.evaluate(x, y, batch_size=16, verbose=0)
    model.evaluate(x[:50], y[:50], batch_size=16, verbose=0)
    executor = model._executor
    assert executor.train.tracing_count() == 1
    assert executor.test.tracing_count() == 1


def test_steps_per_execution_auto_tunes_from_step_time():
    x, y = _data(n=640)
    model = tfk.Model(_net())
    model.compile(
        optimizer="sgd", loss="sparse_categorical_crossentropy", steps_per_execution="auto"
    )
    calls = []

    class Count(tfk.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            calls.append(batch)

    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[Count()])
    tuner = model._execution_lengths.tuner("train", observed=True)
    assert tuner.tuned and tuner.current > 1  # tiny steps: many per execution
    assert int(model.optimizer.iterations.numpy()) == 2 * 80  # no step lost or added
    assert len(calls) < 2 * 80  # fewer executions than steps
    assert model._executor.train.tracing_count() == 1  # never retraced
    with pytest.raises((TypeError, ValueError), match="steps_per_execution"):
        model.compile(loss="mse", steps_per_execution="fast")


def _count_executions(model):
    """Wraps the compiled train/test/predict functions to count calls."""
    counts = {"train": 0, "test": 0, "predict": 0}
    executor = model._executor
    for kind in counts:
        inner = getattr(executor, kind)

        def counted(*args, _inner=inner, _kind=kind):
            counts[_kind] += 1
            return _inner(*args)

        setattr(executor, kind, counted)
    return counts


def _folding_model(fold: bool):
    model = tfk.Model(_net())
    model.fold_executions = fold
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_unobserved_executions_fold_and_give_identical_numbers(monkeypatch):
    """With no per-batch observer, spe=1 runs many steps per call; the numbers do not change."""
    # A target no step time reaches: the tuner picks its maximum length however
    # loaded the machine is, so the execution counts below do not depend on timing.
    monkeypatch.setitem(tuning.StepsPerExecutionTuner.__init__.__kwdefaults__, "target_seconds", 1e3)
    x, y = _data(n=2000)
    results = {}
    for fold in (False, True):
        model = _folding_model(fold)
        model.fit(x[:16], y[:16], batch_size=8, epochs=1, verbose=0)  # builds the executor
        counts = _count_executions(model)
        history = model.fit(
            x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, validation_data=(x, y)
        ).history
        predictions = model.predict(x, batch_size=8, verbose=0)
        results[fold] = (history, model.get_weights(), predictions, dict(counts))
        assert int(model.optimizer.iterations.numpy()) == 2 + 2 * 250  # no step lost or added
    plain, folded = results[False], results[True]
    assert plain[3] == {"train": 500, "test": 500, "predict": 250}  # one step per call
    assert folded[3]["train"] < 100 and folded[3]["test"] < 100 and folded[3]["predict"] < 60
    assert plain[0] == folded[0]  # bit-identical histories
    for a, b in zip(plain[1], folded[1]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(plain[2], folded[2])


class _EveryBatch(tfk.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(batch)


def test_a_batch_observer_keeps_the_compiled_length(tmp_path):
    x, y = _data(n=400)
    watcher = _EveryBatch()
    model = _folding_model(True)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[watcher])
    assert watcher.batches == list(range(50))  # every batch seen, as Keras does
    # The progress bar and epoch-only TensorBoard are content with a time interval...
    assert tfk.callbacks.ProgbarLogger().coarse_batch_hooks
    assert tfk.callbacks.TensorBoard(str(tmp_path)).coarse_batch_hooks
    # ...batch-level TensorBoard logging and profiling are not.
    assert not tfk.callbacks.TensorBoard(str(tmp_path), update_freq="batch").coarse_batch_hooks
    assert not tfk.callbacks.TensorBoard(str(tmp_path), profile_batch=2).coarse_batch_hooks
    counts = _count_executions(model)
    model.fit(x, y, batch_size=8, epochs=1, verbose=1)  # the progress bar alone: folded
    assert counts["train"] < 25


def test_arrays_run_exact_executions_and_datasets_run_until_the_end():
    """In-memory arrays read batches without an end-of-data check (their count is the
    engine's own); a tf.data dataset keeps the check. Each form is traced only if used,
    and both train on the same batches to the same numbers."""
    x, y = _data(n=100)  # 7 batches of 16, the last of 4

    def model():
        m = tfk.Model(_net())
        m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", steps_per_execution=3)
        return m

    arrays = model()
    from_arrays = arrays.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    arrays.evaluate(x, y, batch_size=16, verbose=0)
    arrays.predict(x, batch_size=16, verbose=0)
    arrays.train_on_batch(x[:5], y[:5])
    for kind in ("train", "test", "predict"):
        assert list(getattr(arrays._executor, kind)._forms) == [True], kind

    data = model()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    from_dataset = data.fit(dataset, epochs=2, verbose=0).history
    assert list(data._executor.train._forms) == [False]
    assert int(data.optimizer.iterations.numpy()) == int(arrays.optimizer.iterations.numpy()) - 1
    np.testing.assert_allclose(from_dataset["loss"], from_arrays["loss"], rtol=1e-6, atol=ATOL)


@pytest.mark.parametrize("source", ["arrays", "dataset", "mirrored"])
def test_predict_steps_may_overlap_but_rows_keep_their_order(source, mirrored_strategy):
    """Predict executions let consecutive steps overlap (parallel iterations); the
    iterator's reads stay in order, so row i of the output is row i of the input."""
    x = np.arange(2 * 337, dtype="float32").reshape(337, 2)  # 43 batches of 8, the last of 1
    strategy = mirrored_strategy(4) if source == "mirrored" else tf.distribute.get_strategy()
    with strategy.scope():
        net = keras.Sequential(
            [keras.Input((2,)), keras.layers.Dense(2, kernel_initializer="identity")]
        )
        model = tfk.Model(net)
        model.compile(loss="mse", steps_per_execution=16)
    if source == "dataset":
        kwargs = {"x": tf.data.Dataset.from_tensor_slices(x).batch(8)}
    else:
        kwargs = {"x": x, "batch_size": 8}
    for _ in range(3):
        np.testing.assert_array_equal(model.predict(**kwargs, verbose=0), x)
