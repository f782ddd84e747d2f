"""A small ResNet on the real Fashion-MNIST (offline Debian data).

    .venv/bin/tfk-train --config=fashion_mnist_resnet --model_dir=/tmp/fmnist_resnet

About 0.90+ test accuracy; slow on CPU (minutes per epoch), quick on a GPU.
"""

from tfk_trainer.train.config import base_config


def get_config():
    config = base_config(model="resnet", data="fashion_mnist")
    config.model.stage_filters = (16, 32, 64)
    config.model.blocks_per_stage = 1
    config.data.validation_split = 0.1
    config.train.epochs = 5
    config.train.batch_size = 128
    config.train.steps_per_execution = 16
    config.train.lr_schedule = "cosine"
    config.train.learning_rate = 2e-3
    config.eval.min_accuracy = 0.88
    return config
