"""Replicas agree: one gradient sum per step, before loss scaling and clipping;
XLA where replicas are GPUs; one execution length under multi-worker.

Issue 18 items 1, 6, 7 and 8 (TPU items 4, 5, 10 are in test_tpu_flow.py).
"""

import json
import os

import cluster_helpers
import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import mirrored
from tolerances import ATOL_MULTI

import tfk_trainer as tfk
from tfk_trainer import distribute
from tfk_trainer.engine import execution
from tfk_trainer.engine.tuning import ExecutionLengths, StepsPerExecutionTuner

WORKER = os.path.join(os.path.dirname(__file__), "workers", "auto_steps_fit.py")
CLIPS = [{}, {"global_clipnorm": 1.0}, {"clipnorm": 0.5}, {"clipvalue": 0.1}]


def _data(n=8, d=4):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype("float32")
    y = rng.normal(size=(n, 1)).astype("float32")
    return x, y


def _regressor(strategy, optimizer, d=4):
    with strategy.scope():
        keras.utils.set_random_seed(11)
        net = keras.Sequential([keras.Input((d,)), keras.layers.Dense(8), keras.layers.Dense(1)])
        model = tfk.Model(net)
        model.compile(optimizer, loss="mse")
    return model


def _replica_values(strategy, variable):
    return [t.numpy() for t in strategy.experimental_local_results(variable.value)]


# -- 1: mixed precision: the finite check sees the summed gradients -----------------------


def _mixed_run(strategy, clip):
    keras.config.set_dtype_policy("mixed_float16")
    with strategy.scope():
        optimizer = keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(0.01, **clip), initial_scale=2.0**10
        )
    model = _regressor(strategy, optimizer)
    x, y = _data()
    model.train_on_batch(x, y)
    before = model.get_weights()
    scale = float(model.optimizer.dynamic_scale.numpy())
    overflow = y.copy()
    overflow[4:] = 1e6  # the second replica's rows: their float16 gradients overflow
    model.train_on_batch(x, overflow)
    skipped = model.get_weights()
    halved = float(model.optimizer.dynamic_scale.numpy())
    model.train_on_batch(x, y)
    return model, before, skipped, scale, halved


@pytest.mark.parametrize("clip", CLIPS, ids=lambda c: next(iter(c), "none"))
def test_mixed_float16_overflow_on_one_replica_skips_the_step_everywhere(clip):
    two = mirrored(2)
    model, before, skipped, scale, halved = _mixed_run(two, clip)
    one, before1, skipped1, scale1, halved1 = _mixed_run(tf.distribute.get_strategy(), clip)
    assert scale == scale1 == 2.0**10
    # Every replica skipped the step: weights unchanged, the scale halved once.
    for b, s in zip(before, skipped):
        np.testing.assert_array_equal(s, b)
    assert halved == halved1 == scale / 2
    # Replicas hold the same finite weights, equal to one device's.
    for variable in model.trainable_variables:
        values = _replica_values(two, variable)
        assert all(np.isfinite(v).all() for v in values)
        for other in values[1:]:
            np.testing.assert_array_equal(other, values[0])
    for a, b in zip(model.get_weights(), one.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=ATOL_MULTI)
    assert float(model.optimizer.dynamic_scale.numpy()) == float(
        one.optimizer.dynamic_scale.numpy()
    )


# -- 7: one all-reduce of the gradients per step -------------------------------------------


class _CountAllReduce:
    """Records the element count of every replica-context all-reduce while tracing."""

    def __init__(self, monkeypatch):
        self.sizes = []
        original = tf.distribute.ReplicaContext.all_reduce

        def all_reduce(ctx, reduce_op, value, options=None):
            leaves = tf.nest.flatten(value)
            self.sizes.append(sum(int(np.prod(t.shape)) for t in leaves))
            return original(ctx, reduce_op, value, options)

        monkeypatch.setattr(tf.distribute.ReplicaContext, "all_reduce", all_reduce)


@pytest.mark.parametrize("clip", CLIPS, ids=lambda c: next(iter(c), "none"))
def test_one_gradient_all_reduce_per_step(clip, monkeypatch):
    strategy = mirrored(2)
    model = _regressor(strategy, keras.optimizers.SGD(0.1, **clip))
    params = sum(int(np.prod(w.shape)) for w in model.get_weights())
    counter = _CountAllReduce(monkeypatch)
    x, y = _data(32)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    gradient_sums = [s for s in counter.sizes if s == params]
    loss_sums = [s for s in counter.sizes if s == 2]  # the loss's count and batch, per replica
    assert loss_sums and len(gradient_sums) == len(loss_sums), counter.sizes


@pytest.mark.parametrize("clip", [{}, {"global_clipnorm": 1.0}], ids=["none", "global_clipnorm"])
def test_one_gradient_all_reduce_per_step_with_loss_scaling(clip, monkeypatch):
    keras.config.set_dtype_policy("mixed_float16")
    strategy = mirrored(2)
    with strategy.scope():
        optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1, **clip))
    model = _regressor(strategy, optimizer)
    params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    counter = _CountAllReduce(monkeypatch)
    x, y = _data(16)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert [s for s in counter.sizes if s == params] == [params, params], counter.sizes


@pytest.mark.parametrize("clip", CLIPS, ids=lambda c: next(iter(c), "none"))
def test_clipping_under_two_replicas_equals_one_device(clip):
    x, y = _data(32)
    one = _regressor(tf.distribute.get_strategy(), keras.optimizers.SGD(0.1, **clip))
    two = _regressor(mirrored(2), keras.optimizers.SGD(0.1, **clip))
    h1 = one.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    h2 = two.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(h2.history["loss"], h1.history["loss"], rtol=0, atol=ATOL_MULTI)
    for a, b in zip(two.get_weights(), one.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=ATOL_MULTI)


# -- 6: XLA on GPU replicas, not on CPU replicas ------------------------------------------


@pytest.mark.parametrize(
    "devices, expected",
    [
        (
            [
                "/job:localhost/replica:0/task:0/device:GPU:0",
                "/job:localhost/replica:0/task:0/device:GPU:1",
            ],
            True,
        ),
        (["/gpu:0", "/gpu:1", "/gpu:2", "/gpu:3"], True),
        (["/job:worker/replica:0/task:1/device:GPU:0"], True),
        (
            [
                "/job:localhost/replica:0/task:0/device:CPU:0",
                "/job:localhost/replica:0/task:0/device:CPU:1",
            ],
            False,
        ),
        (
            [
                "/job:localhost/replica:0/task:0/device:CPU:0",
                "/job:localhost/replica:0/task:0/device:GPU:0",
            ],
            False,
        ),
        (["/cpu:0"], False),
        ([], False),
    ],
)
def test_xla_replica_devices_is_gpus_only(devices, expected):
    assert distribute.xla_replica_devices(devices) is expected


def test_device_kind_reads_every_spelling():
    assert distribute.device_kind("/job:worker/replica:0/task:3/device:GPU:7") == "GPU"
    assert distribute.device_kind("/gpu:0") == "GPU"
    assert distribute.device_kind("/device:CPU:0") == "CPU"
    assert distribute.device_kind("/job:worker/replica:0/task:0/device:TPU:1") == "TPU"


def test_auto_xla_is_off_on_cpu_replicas_and_on_for_gpu_replicas(monkeypatch):
    strategy = mirrored(2)
    assert distribute.cpu_replicas(strategy)
    assert not distribute.xla_replicas(strategy)
    assert execution.resolve_jit_compile("auto", strategy, False) is False
    with pytest.raises(ValueError, match="jit_compile=True"):
        execution.resolve_jit_compile(True, strategy, False)
    gpus = (
        "/job:localhost/replica:0/task:0/device:GPU:0",
        "/job:localhost/replica:0/task:0/device:GPU:1",
    )
    monkeypatch.setattr(distribute, "replica_devices", lambda s=None: gpus)
    assert distribute.xla_replicas(strategy)
    assert execution.resolve_jit_compile("auto", strategy, False) is True
    assert execution.resolve_jit_compile(True, strategy, False) is True
    assert execution.resolve_jit_compile(False, strategy, False) is False
    assert execution.resolve_jit_compile("auto", strategy, True) is False  # run_eagerly


# -- 8: steps_per_execution="auto": the chief decides for every worker ---------------------


def test_tuner_takes_the_agreed_value():
    asked = []

    def agree(value):
        asked.append(value)
        return 7

    tuner = StepsPerExecutionTuner(target_seconds=1.0, probes=2, agree=agree)
    for _ in range(3):
        tuner.observe(1, 0.5)
    assert tuner.tuned and tuner.current == 7 and asked == [2]
    lengths = ExecutionLengths("auto", agree=agree)
    assert lengths.tuner("train", observed=True).agree is agree


def test_broadcast_from_chief_is_the_value_itself_off_multi_worker():
    assert distribute.broadcast_from_chief(5, mirrored(2)) == 5
    assert distribute.chief_decides(mirrored(2)) is None


@pytest.mark.timeout(400)
def test_two_workers_use_the_chiefs_tuned_execution_length(tmp_path):
    cluster_helpers.run(WORKER, [str(tmp_path)], tmp_path, timeout=240)
    chief, other = (json.loads((tmp_path / f"auto_{i}.json").read_text()) for i in range(2))
    # Worker 1 alone would have tuned to 1 step; it uses the chief's value.
    assert chief["tuned"] == other["tuned"]
    assert chief["tuned"]["train"] > 1
    assert chief["train"] == other["train"] and chief["test"] == other["test"]
    steps = 256 // 8
    # First execution (tracing) and three probes of one step, then the rest at once.
    assert chief["train"][:5] == [0, 1, 2, 3, steps - 1]
    np.testing.assert_allclose(chief["weights"][0], other["weights"][0], rtol=0, atol=0)
