"""The main job's MLP on a Cloud TPU VM: TPUStrategy, bfloat16, static shapes.

tfk-train --config=tpu_fashion_mnist_mlp --model_dir=gs://bucket/run
(the Fashion-MNIST files must be on the VM: dataset-fashion-mnist or data.data_dir)
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
    config.runtime.tpu = "local"
    config.runtime.mixed_precision = "mixed_bfloat16"
    config.runtime.static_shapes = True
    return config
