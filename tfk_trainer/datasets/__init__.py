"""Small, offline dataset loaders for examples and tests.

The loaders here read data that is already on the machine (e.g. installed from a
Debian package) instead of downloading it at run time, so examples and tests work
on machines without general internet access.
"""

from tfk_trainer.datasets.fashion_mnist import load_fashion_mnist

__all__ = ["load_fashion_mnist"]
