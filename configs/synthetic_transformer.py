"""The shipped config `synthetic_transformer`: its one copy is tfk_trainer/configs/synthetic_transformer.py.

    tfk-train --config=synthetic_transformer ...                # by name, installed or not
    tfk-train --config=configs/synthetic_transformer.py ...     # this file, in a checkout
"""

from tfk_trainer.configs.synthetic_transformer import get_config  # noqa: F401
