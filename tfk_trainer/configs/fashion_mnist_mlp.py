"""The main job: an MLP on the real Fashion-MNIST (offline Debian data), CPU, ~1 min.

    .venv/bin/tfk-train --config=fashion_mnist_mlp --model_dir=/tmp/tfk_fashion_mnist

Reaches about 0.88 test accuracy; the run exits non-zero below 0.85.
"""

from tfk_trainer.train.config import base_config


def get_config():
    config = base_config(model="mlp", data="fashion_mnist")
    config.model.hidden_units = (256, 128)
    config.model.dropout = 0.2
    config.data.validation_split = 0.1
    config.train.epochs = 5
    config.train.batch_size = 128
    config.train.steps_per_execution = 16
    config.train.optimizer = "adam"
    config.train.learning_rate = 1e-3
    config.eval.batch_size = 512
    config.eval.min_accuracy = 0.85
    return config
