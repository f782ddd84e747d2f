"""A small ResNet on CIFAR-10 from TensorFlow Datasets (needs the tfds extra and, the
first time, internet access to download the data into data.data_dir).

    pip install 'tfk_trainer[tfds]'
    .venv/bin/tfk-train --config=cifar10_resnet --model_dir=/tmp/cifar10 \
        --config.data.data_dir=$HOME/tensorflow_datasets

Offline, prepare the data elsewhere and set data.download = False (the default
of the "tfds" dataset): then nothing is downloaded.
"""

from tfk_trainer.train.config import base_config


def get_config():
    config = base_config(model="resnet", data="tfds")
    config.model.stage_filters = (32, 64, 128)
    config.model.blocks_per_stage = 2
    config.model.l2 = 1e-4
    config.data.tfds_name = "cifar10"
    config.data.download = True
    config.data.validation_split = 0.1
    config.train.epochs = 30
    config.train.batch_size = 128
    config.train.steps_per_execution = 32
    config.train.optimizer = "sgd"
    config.train.learning_rate = 0.1
    config.train.lr_schedule = "cosine"
    config.eval.min_accuracy = 0.85
    return config
