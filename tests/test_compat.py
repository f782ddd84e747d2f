"""Canaries for the private TensorFlow/Keras/ml_collections APIs in tfk_trainer/compat.py.

Each private thing tfk_trainer relies on still exists in the installed versions
and still behaves as the package assumes; compat.py is the only module of the
package that reaches one; a missing one fails loudly; and the errors that the
package used to swallow now keep their cause (or are reported as a warning).
Written against what TF 2.20 and 2.21 (with Keras 3.12-3.15) both have:
tools/run_tests_tf220.sh runs this module too.
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from ml_collections import config_flags

import tfk_trainer as tfk
from tfk_trainer import compat
from tfk_trainer.callbacks import EarlyStopping, TensorBoard
from tfk_trainer.callbacks.base import _overrides

ATOL = 1e-6
PACKAGE = Path(tfk.__file__).resolve().parent

# What only compat.py may reach. `self._learning_rate` in the TensorBoard callback
# is its own method, hence the look-behind.
PRIVATE = re.compile(
    r"summary_ops_v2|keras\.src\.|\._clip_gradients|_all_reduce_sum_gradients|_in_multi_worker_mode|_keras_mask"
    r"|\._fn_kwargs|tensorflow\.python|\._direction|(?<!self)\._learning_rate|_ReportError"
    r"|\b_summary_state\b|_ErrorConfig|getattr\([^)]*[\"']_(fn|fn_kwargs|direction|learning_rate)[\"']"
)


# -- the source scan -------------------------------------------------------------


def test_no_private_tf_or_keras_access_outside_compat():
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "compat.py" and path.parent == PACKAGE:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE.search(line):
                hits.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not hits, "private TF/Keras access outside tfk_trainer/compat.py:\n" + "\n".join(hits)


def test_the_scan_catches_what_it_looks_for():
    """The pattern is not vacuous: each old call site's text matches it."""
    for line in (
        "from tensorflow.python.ops import summary_ops_v2",
        'mask = getattr(y_pred, "_keras_mask", None)',
        "clipped = inner._clip_gradients(summed)",
        "optimizer._all_reduce_sum_gradients = skip",
        'lr = getattr(inner, "_learning_rate", None)',
        "return metric._direction",
        'getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)()',
        '"keras.src.callbacks.callback"',
        'getattr(type(config), "_ReportError", None)',
    ):
        assert PRIVATE.search(line), line
    assert not PRIVATE.search("lr = self._learning_rate()")


# -- TensorFlow canaries --------------------------------------------------------------


def test_summary_recording_condition_follows_record_if():
    assert compat.summary_recording_condition() is None
    with tf.summary.record_if(False):
        assert compat.summary_recording_condition() is False
        with tf.summary.record_if(True):
            assert compat.summary_recording_condition() is True
        assert compat.summary_recording_condition() is False

        def condition():
            return True

        with tf.summary.record_if(condition):
            assert compat.summary_recording_condition() is condition
    assert compat.summary_recording_condition() is None


def test_in_multi_worker_mode_is_false_on_one_host(mirrored_strategy):
    assert compat.in_multi_worker_mode(tf.distribute.get_strategy()) is False
    assert compat.in_multi_worker_mode(tf.distribute.OneDeviceStrategy("/cpu:0")) is False
    assert compat.in_multi_worker_mode(mirrored_strategy(2)) is False
    assert tfk.distribute.is_multi_worker() is False


def test_in_multi_worker_mode_is_answered_by_each_strategy():
    """Multi-worker strategies answer themselves; a True case needs a live cluster,
    which tests/test_distribute.py runs."""
    base = tf.distribute.StrategyExtended._in_multi_worker_mode
    extended = type(tf.distribute.get_strategy().extended)
    assert callable(base) and callable(extended._in_multi_worker_mode)


def test_is_dataset_from_function_tells_the_two_distributions_apart(mirrored_strategy):
    strategy = mirrored_strategy(2)
    dataset = tf.data.Dataset.range(8).batch(4)
    assert compat.is_dataset_from_function(
        strategy.distribute_datasets_from_function(lambda context: dataset)
    )
    assert not compat.is_dataset_from_function(strategy.experimental_distribute_dataset(dataset))
    assert not compat.is_dataset_from_function(dataset)


# -- Keras canaries ---------------------------------------------------------------------


def _sgd_step_on_two_replicas(apply):
    """The variable after one SGD(lr=1) step whose replica `r` hands `apply` the gradient
    `r + 1` (1 and 2) or, for reduced gradients, their sum."""
    from conftest import mirrored

    strategy = mirrored(2)
    with strategy.scope():
        optimizer = keras.optimizers.SGD(1.0)
        variable = keras.Variable([0.0])

    @tf.function
    def step():
        def replica():
            ctx = tf.distribute.get_replica_context()
            grad = tf.cast(ctx.replica_id_in_sync_group, tf.float32) + 1.0
            apply(optimizer, [tf.reshape(grad, [1])], [variable])

        strategy.run(replica)

    step()
    return float(variable.numpy()[0])


def test_keras_sums_gradients_across_replicas_inside_apply():
    """The sum apply_reduced_gradients skips is where Keras does it: plain `apply`
    sums the replicas' gradients (1 + 2)."""
    assert _sgd_step_on_two_replicas(lambda o, g, v: o.apply(g, v)) == -3.0


def test_apply_reduced_gradients_sums_nothing_again():
    def reduced(optimizer, grads, variables):
        ctx = tf.distribute.get_replica_context()
        summed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        compat.apply_reduced_gradients(optimizer, summed, variables)

    assert _sgd_step_on_two_replicas(reduced) == -3.0  # not -6: no second sum


def test_apply_reduced_gradients_leaves_other_applies_summing():
    def both(optimizer, grads, variables):
        ctx = tf.distribute.get_replica_context()
        compat.apply_reduced_gradients(
            optimizer, ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads), variables
        )
        optimizer.apply(grads, variables)  # a custom train_step's own apply: Keras sums

    assert _sgd_step_on_two_replicas(both) == -6.0


def test_keras_mask_is_set_by_a_masking_layer():
    x = tf.constant([[[0.0, 0.0], [1.0, 2.0], [0.0, 3.0]]])
    assert compat.keras_mask(x) is None
    masked = keras.layers.Masking(mask_value=0.0)(x)
    np.testing.assert_array_equal(compat.keras_mask(masked).numpy(), [[False, True, True]])

    @tf.function
    def traced(x):
        return compat.keras_mask(keras.layers.Masking(mask_value=0.0)(x))

    np.testing.assert_array_equal(traced(x).numpy(), [[False, True, True]])


def test_keras_mask_of_an_embedding_with_mask_zero():
    embedded = keras.layers.Embedding(5, 2, mask_zero=True)(tf.constant([[0, 3, 0]]))
    np.testing.assert_array_equal(compat.keras_mask(embedded).numpy(), [[False, True, False]])


def test_wrapped_fn_and_kwargs_of_losses_and_metrics():
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=3)
    fn, kwargs = compat.wrapped_fn_and_kwargs(loss)
    assert fn is keras.losses.sparse_categorical_crossentropy
    assert kwargs["from_logits"] is True and kwargs["ignore_class"] == 3

    fn, kwargs = compat.wrapped_fn_and_kwargs(keras.metrics.SparseCategoricalAccuracy())
    assert fn is keras.metrics.sparse_categorical_accuracy

    fn, _ = compat.wrapped_fn_and_kwargs(keras.losses.MeanSquaredError())
    assert fn is keras.losses.mean_squared_error

    class Custom(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return y_pred

    assert compat.wrapped_fn_and_kwargs(Custom()) is None
    assert compat.wrapped_fn_and_kwargs(keras.metrics.Mean()) is None


def test_metric_direction_is_up_for_accuracy_and_down_for_errors():
    assert compat.metric_direction(keras.metrics.Accuracy()) == "up"
    assert compat.metric_direction(keras.metrics.SparseCategoricalAccuracy()) == "up"
    assert compat.metric_direction(keras.metrics.AUC()) == "up"
    assert compat.metric_direction(keras.metrics.MeanAbsoluteError()) == "down"
    assert compat.metric_direction(keras.metrics.MeanSquaredError()) == "down"
    assert compat.metric_direction(keras.metrics.Mean()) is None


def test_optimizer_learning_rate_is_the_variable_or_the_schedule():
    lr = compat.optimizer_learning_rate(keras.optimizers.SGD(0.25))
    assert isinstance(lr, keras.Variable)
    np.testing.assert_allclose(float(lr.numpy()), 0.25, rtol=0, atol=ATOL)

    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    assert compat.optimizer_learning_rate(keras.optimizers.Adam(schedule)) is schedule
    assert compat.optimizer_learning_rate(object()) is None


def test_keras_callback_base_hooks_are_not_overrides():
    """The no-op hooks of keras.callbacks.Callback are recognised (by the class itself,
    not by the private module it lives in): batch hooks not overridden are skipped."""

    class EpochOnly(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            pass

    class BatchToo(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    assert not _overrides(EpochOnly(), "on_train_batch_end")
    assert _overrides(EpochOnly(), "on_epoch_end")
    assert _overrides(BatchToo(), "on_train_batch_end")
    assert not _overrides(keras.callbacks.History(), "on_train_batch_end")


# -- ml_collections canary ------------------------------------------------------------


def test_config_load_error_is_the_deferred_file_error(tmp_path):
    values = flags.FlagValues()
    holder = config_flags.DEFINE_config_file("config", None, flag_values=values)
    missing = tmp_path / "no_such_config.py"
    values(["prog", f"--config={missing}"])
    error = compat.config_load_error(holder.value)
    assert isinstance(error, OSError) and "no_such_config.py" in str(error)

    import ml_collections

    assert compat.config_load_error(ml_collections.ConfigDict({"a": 1})) is None
    assert compat.config_load_error(None) is None


# -- a private API that is gone fails loudly ---------------------------------------------


@pytest.fixture
def fresh_checks():
    """compat checks each API once; these tests need the check to run again."""
    checks = [
        compat._check_all_reduce_sum_gradients,
        compat._check_direction,
        compat._check_multi_worker_api,
        compat._check_learning_rate,
        compat._masking,
        compat._summary_state,
    ]
    for check in checks:
        check.cache_clear()
    yield
    for check in checks:
        check.cache_clear()


def _defining_class(cls: type, name: str) -> type:
    return next(k for k in cls.__mro__ if name in vars(k))


def test_missing_all_reduce_sum_gradients_raises_naming_the_versions(monkeypatch, fresh_checks):
    owner = _defining_class(keras.optimizers.Optimizer, "_all_reduce_sum_gradients")
    monkeypatch.delattr(owner, "_all_reduce_sum_gradients")
    with pytest.raises(
        compat.PrivateApiError,
        match=r"_all_reduce_sum_gradients.*Keras " + re.escape(keras.__version__),
    ):
        compat.apply_reduced_gradients(
            keras.optimizers.SGD(), [tf.constant([1.0])], [keras.Variable([0.0])]
        )


def test_missing_metric_direction_raises_instead_of_guessing(monkeypatch, fresh_checks):
    def init(self, name="accuracy", dtype=None):
        keras.metrics.MeanMetricWrapper.__init__(
            self, fn=keras.metrics.binary_accuracy, name=name, dtype=dtype
        )

    monkeypatch.setattr(keras.metrics.Accuracy, "__init__", init)
    with pytest.raises(compat.PrivateApiError, match=r"_direction.*TensorFlow"):
        compat.metric_direction(keras.metrics.MeanAbsoluteError())


def test_missing_multi_worker_mode_raises(monkeypatch, fresh_checks):
    monkeypatch.delattr(tf.distribute.StrategyExtended, "_in_multi_worker_mode")
    with pytest.raises(compat.PrivateApiError, match="_in_multi_worker_mode"):
        compat.in_multi_worker_mode(tf.distribute.get_strategy())


def test_missing_module_raises_with_the_import_error_as_cause(monkeypatch, fresh_checks):
    monkeypatch.setitem(sys.modules, "tensorflow.python.ops.summary_ops_v2", None)
    with pytest.raises(compat.PrivateApiError, match="summary_ops_v2") as info:
        compat.summary_recording_condition()
    assert isinstance(info.value.__cause__, ImportError)


def test_missing_learning_rate_attribute_raises(monkeypatch, fresh_checks):
    optimizer = keras.optimizers.SGD(0.1)
    monkeypatch.delattr(optimizer, "_learning_rate")
    with pytest.raises(compat.PrivateApiError, match="_learning_rate") as info:
        compat.optimizer_learning_rate(optimizer)
    assert isinstance(info.value.__cause__, AttributeError)


# -- errors no longer swallowed ---------------------------------------------------------------


def _tiny_model() -> tfk.Model:
    model = tfk.Model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"], jit_compile=False)
    return model


def test_validation_inputs_that_do_not_fit_keep_the_models_error_as_cause():
    x, y = np.zeros((8, 4), "float32"), np.zeros((8, 3), "float32")
    model = _tiny_model()
    with pytest.raises(ValueError, match=r"inputs of `validation_data` do not fit") as info:
        model.fit(x, y, validation_data=(np.zeros((8, 5), "float32"), y), verbose=0)
    assert info.value.__cause__ is not None
    assert "5" in str(info.value.__cause__)


def test_auto_mode_raises_with_the_cause_when_the_metrics_cannot_be_listed():
    class Broken(tfk.Model):
        @property
        def metrics(self):
            raise RuntimeError("metrics exploded")

    model = Broken(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
    model.compile(optimizer="sgd", loss="mse", jit_compile=False)
    callback = EarlyStopping(monitor="val_thing", mode="auto")
    callback.set_model(model)
    with pytest.raises(RuntimeError, match=r'mode="auto".*metrics exploded') as info:
        callback._set_monitor_op()
    assert str(info.value.__cause__) == "metrics exploded"


def test_auto_mode_of_an_unbuilt_model_still_uses_the_name():
    model = tfk.Model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
    callback = EarlyStopping(monitor="val_accuracy", mode="auto")
    callback.set_model(model)
    callback._set_monitor_op()
    assert callback.monitor_op is np.greater


def test_graph_trace_that_cannot_stop_is_a_warning_not_silence(tmp_path, monkeypatch):
    def broken_trace_off():
        raise RuntimeError("trace_off exploded")

    monkeypatch.setattr(tf.summary, "trace_off", broken_trace_off)
    x, y = np.zeros((16, 4), "float32"), np.zeros((16, 3), "float32")
    model = _tiny_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[TensorBoard(str(tmp_path))])
    messages = [str(w.message) for w in caught]
    assert any("could not stop tracing" in m and "trace_off exploded" in m for m in messages), (
        messages
    )


def test_sparse_label_check_finds_keras_and_tfk_wrapped_cross_entropies():
    """The label-range check reads the wrapped function through compat; tfk's own
    FunctionLoss (a plain `fn` compiled by name) is found too."""
    from tfk_trainer.compile import FunctionLoss
    from tfk_trainer.engine.checks import _sparse_kwargs

    loss = keras.losses.SparseCategoricalCrossentropy(ignore_class=3)
    assert _sparse_kwargs(loss)["ignore_class"] == 3
    metric = keras.metrics.SparseCategoricalCrossentropy(from_logits=True)
    assert _sparse_kwargs(metric)["from_logits"] is True
    assert _sparse_kwargs(keras.metrics.SparseCategoricalAccuracy()) is None
    assert _sparse_kwargs(FunctionLoss(keras.losses.sparse_categorical_crossentropy)) == {}
    assert _sparse_kwargs(keras.losses.MeanSquaredError()) is None


# Errors translated into one that names the argument keep the original as `__cause__`.


def test_unknown_optimizer_keeps_keras_error_as_cause():
    from tfk_trainer.compile import resolve_optimizer

    with pytest.raises(ValueError, match="Unknown optimizer 'adamm'") as info:
        resolve_optimizer("adamm")
    assert isinstance(info.value.__cause__, ValueError)


def test_bad_class_weight_value_keeps_the_conversion_error_as_cause():
    from tfk_trainer.data import class_weight

    with pytest.raises(TypeError, match=r"class_weight\[0\]") as info:
        class_weight.validate({0: "heavy"})
    assert isinstance(info.value.__cause__, ValueError)


def test_schedule_output_that_keras_cannot_convert_keeps_the_cause():
    from tfk_trainer.callbacks.learning_rate import _as_lr

    with pytest.raises(ValueError, match="should be a float") as info:
        _as_lr([[1.0], [1.0, 2.0]])
    assert info.value.__cause__ is not None


def test_invalid_tf_config_keeps_the_parse_error_as_cause(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is set but is not a valid") as info:
        tfk.distribute.resolve("multi_worker_mirrored")
    assert isinstance(info.value.__cause__, ValueError)


def test_sample_weight_that_does_not_broadcast_keeps_the_cause():
    """Eagerly (inside fit, TF's tracing rewraps every error raised while tracing)."""
    from tfk_trainer.engine.step import loss_sum_and_count

    y = tf.zeros((8, 3))
    with pytest.raises(ValueError, match="`sample_weight` of shape") as info:
        loss_sum_and_count(keras.losses.MeanSquaredError(), y, y, tf.ones((8, 2)))
    assert isinstance(info.value.__cause__, ValueError)


def test_masked_loss_matches_keras_through_the_engine():
    """The engine reads the mask a Masking layer attaches (compat.keras_mask): the
    masked loss equals Keras's own evaluate of the same network."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 5, 2)).astype("float32")
    x[:, 3:] = 0.0  # the last two timesteps are masked
    y = rng.normal(size=(8, 5, 1)).astype("float32")
    net = keras.Sequential([keras.Input((5, 2)), keras.layers.Masking(0.0), keras.layers.Dense(1)])
    reference = keras.models.clone_model(net)
    reference.set_weights(net.get_weights())
    reference.compile(loss="mse")
    expected = reference.evaluate(x, y, batch_size=8, verbose=0)

    model = tfk.Model(net)
    model.compile(optimizer="sgd", loss="mse", jit_compile=False)
    got = model.evaluate(x, y, batch_size=8, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    unmasked = float(np.mean((net(x).numpy() - y) ** 2))
    assert abs(got - unmasked) > 1e-3  # the mask changed the loss
