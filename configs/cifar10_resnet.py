"""The shipped config `cifar10_resnet`: its one copy is tfk_trainer/configs/cifar10_resnet.py.

    tfk-train --config=cifar10_resnet ...                # by name, installed or not
    tfk-train --config=configs/cifar10_resnet.py ...     # this file, in a checkout
"""

from tfk_trainer.configs.cifar10_resnet import get_config  # noqa: F401
