"""The shipped config `fashion_mnist_resnet`: its one copy is tfk_trainer/configs/fashion_mnist_resnet.py.

    tfk-train --config=fashion_mnist_resnet ...                # by name, installed or not
    tfk-train --config=configs/fashion_mnist_resnet.py ...     # this file, in a checkout
"""

from tfk_trainer.configs.fashion_mnist_resnet import get_config  # noqa: F401
