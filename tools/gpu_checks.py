"""The checks that need GPUs (run by tools/gpu_check.sh; skipped without a GPU).

Not under tests/: the test suite hides GPUs and splits the CPU into logical
devices (tests/conftest.py). Here the replicas are real GPUs: every GPU, or,
on a one-GPU machine, that GPU split into two logical GPUs so that two
replicas still run.

    python -m pytest -q tools/gpu_checks.py
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfk_trainer as tfk  # noqa: E402
from tfk_trainer import distribute  # noqa: E402
from tfk_trainer.engine import execution  # noqa: E402

# TFK_GPU_CHECKS_ON_CPU=1: a dry run of these checks on two logical CPUs (the
# XLA check skipped), to try this file on a machine without a GPU.
_ON_CPU = os.environ.get("TFK_GPU_CHECKS_ON_CPU") == "1"
_KIND = "CPU" if _ON_CPU else "GPU"
_GPUS = tf.config.list_physical_devices(_KIND)
if len(_GPUS) == 1:
    tf.config.set_logical_device_configuration(
        _GPUS[0],
        [tf.config.LogicalDeviceConfiguration(**({} if _ON_CPU else {"memory_limit": 4096}))] * 2,
    )
tf.config.experimental.enable_tensor_float_32_execution(False)  # float32 comparisons

pytestmark = pytest.mark.skipif(not _GPUS, reason="no GPU visible to TensorFlow")
ATOL = 1e-4  # GPU kernels sum in other orders than one device


def _mirrored() -> tf.distribute.MirroredStrategy:
    devices = [d.name for d in tf.config.list_logical_devices(_KIND)]
    if len(_GPUS) == 1:  # two logical devices on one: no NCCL between them
        return tf.distribute.MirroredStrategy(
            devices, cross_device_ops=tf.distribute.HierarchicalCopyAllReduce()
        )
    return tf.distribute.MirroredStrategy(devices)


def _data(n=256, d=16, c=4):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype("float32")
    return x, (np.abs(x).argmax(1) % c).astype("int64")


def _model(strategy, jit="auto", optimizer=None, d=16, c=4):
    with strategy.scope():
        keras.utils.set_random_seed(3)
        net = keras.Sequential(
            [keras.Input((d,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(c)]
        )
        model = tfk.Model(net)
        model.compile(
            optimizer or keras.optimizers.SGD(0.1),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=jit,
        )
    return model


@pytest.mark.skipif(_ON_CPU, reason="XLA auto is off on CPU replicas")
def test_replicas_are_gpus_and_auto_xla_compiles_them():
    strategy = _mirrored()
    assert distribute.num_replicas(strategy) >= 2
    assert distribute.xla_replicas(strategy)
    assert execution.resolve_jit_compile("auto", strategy, False) is True


@pytest.mark.parametrize("jit", ["auto", False])
def test_mirrored_over_every_gpu_equals_one_gpu(jit):
    x, y = _data()
    one = _model(tf.distribute.OneDeviceStrategy(f"/{_KIND.lower()}:0"), jit)
    many = _model(_mirrored(), jit)
    h1 = one.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    h2 = many.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(h2.history["loss"], h1.history["loss"], rtol=0, atol=ATOL)
    for a, b in zip(many.get_weights(), one.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)
    e1 = one.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    e2 = many.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    for key in e1:
        np.testing.assert_allclose(e2[key], e1[key], rtol=0, atol=ATOL)


def test_predict_keeps_input_order_on_gpu_replicas():
    x, _ = _data(250)
    model = _model(_mirrored())
    reference = model.network(x, training=False).numpy()
    for spe in (1, 4):
        model.compile(
            keras.optimizers.SGD(0.1),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            steps_per_execution=spe,
        )
        np.testing.assert_allclose(
            model.predict(x, batch_size=32, verbose=0), reference, rtol=0, atol=ATOL
        )


@pytest.mark.parametrize("clip", [{}, {"global_clipnorm": 1.0}])
@pytest.mark.parametrize("jit", ["auto", False])
def test_mixed_float16_overflow_on_one_replica_skips_everywhere(clip, jit):
    """Rows that overflow float16 only on the second replica: every replica skips
    the step and the scale halves once; weights stay finite and equal."""
    keras.config.set_dtype_policy("mixed_float16")
    try:
        strategy = _mirrored()
        replicas = distribute.num_replicas(strategy)
        with strategy.scope():
            optimizer = keras.optimizers.LossScaleOptimizer(
                keras.optimizers.SGD(0.01, **clip), initial_scale=2.0**10
            )
        model = _model(strategy, jit, optimizer)
        x, y = _data(8 * replicas)
        model.train_on_batch(x, y)
        before = model.get_weights()
        scale = float(model.optimizer.dynamic_scale.numpy())
        # Huge logits targets are not possible with sparse labels: scale the inputs of
        # the last replica's rows so its float16 activations and gradients overflow.
        bad = x.copy()
        bad[-8:] *= 1e5
        model.train_on_batch(bad, y)
        for b, a in zip(before, model.get_weights()):
            np.testing.assert_array_equal(a, b)
        assert float(model.optimizer.dynamic_scale.numpy()) == scale / 2
        model.train_on_batch(x, y)
        for variable in model.trainable_variables:
            values = [t.numpy() for t in strategy.experimental_local_results(variable.value)]
            assert all(np.isfinite(v).all() for v in values)
            for other in values[1:]:
                np.testing.assert_array_equal(other, values[0])
    finally:
        keras.config.set_dtype_policy("float32")
