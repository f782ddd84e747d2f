"""Test setup: 4 logical CPU devices, configured once before TensorFlow runs an op.

Multi-replica tests build `MirroredStrategy` over 2 or 4 of these devices;
single-device tests are unaffected (the default strategy uses CPU:0).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

NUM_LOGICAL_CPUS = 4

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * NUM_LOGICAL_CPUS
)


def mirrored(n: int) -> tf.distribute.MirroredStrategy:
    """A MirroredStrategy over the first `n` logical CPUs.

    Reduction goes through one device: TF's collective all-reduce keys its
    groups per strategy object from 1, so two collective strategies of
    different sizes in one process (2 and 4 replicas, as these tests build)
    collide ("joining a group with size 4, but that group has size 2").
    """
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:n]
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


@pytest.fixture
def mirrored_strategy():
    return mirrored


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    yield
    keras.config.set_dtype_policy("float32")
