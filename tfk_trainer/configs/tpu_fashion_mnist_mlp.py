"""The main job's MLP on a Cloud TPU VM: TPUStrategy, bfloat16, static shapes.

One-host TPU VM (v2-8, v3-8, v4-8, v5litepod-8), on that VM:
    tfk-train --config=tpu_fashion_mnist_mlp --model_dir=gs://bucket/run
(the Fashion-MNIST files must be on the VM: dataset-fashion-mnist or data.data_dir)

A pod slice (several hosts, e.g. v4-32): ONE client process names the TPU;
the slice's hosts are its input workers. Run it once, not on every host:
    tfk-train --config=tpu_fashion_mnist_mlp --model_dir=gs://bucket/run --tpu=MY_POD
`tpu="local"` on a multi-host slice is refused: it would see only one host's
chips. See docs/distributed.md, "A TPU pod slice". Scale `train.batch_size`
with the number of cores (it must divide by them).
"""

from tfk_trainer.train.config import base_config


def get_config():
    config = base_config(model="mlp", data="fashion_mnist")
    config.model.hidden_units = (256, 128)
    config.model.dropout = 0.2
    config.data.validation_split = 0.1
    config.train.epochs = 5
    config.train.batch_size = 1024  # divisible by the 8 cores of a v2-8/v3-8
    config.train.steps_per_execution = 200
    config.train.learning_rate = 2e-3
    config.eval.batch_size = 1024
    config.eval.min_accuracy = 0.85
    config.runtime.strategy = "tpu"
    config.runtime.tpu = "local"  # this host's chips; --tpu=NAME on a pod slice's client
    config.runtime.mixed_precision = "mixed_bfloat16"
    config.runtime.static_shapes = True
    return config
