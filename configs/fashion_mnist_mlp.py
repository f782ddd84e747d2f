"""The shipped config `fashion_mnist_mlp`: its one copy is tfk_trainer/configs/fashion_mnist_mlp.py.

    tfk-train --config=fashion_mnist_mlp ...                # by name, installed or not
    tfk-train --config=configs/fashion_mnist_mlp.py ...     # this file, in a checkout
"""

from tfk_trainer.configs.fashion_mnist_mlp import get_config  # noqa: F401
