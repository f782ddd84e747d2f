"""Thin entry point of the training binary (the same as the `tfk-train` console script).

    .venv/bin/python tools/train.py --config=configs/fashion_mnist_mlp.py \
        --model_dir=/tmp/tfk_fashion_mnist [--mode=...] [--config.train.epochs=3]

See tfk_trainer/train/main.py for the flags and exit codes.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Hide TF's C++ INFO chatter.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfk_trainer.train.main import run  # noqa: E402

if __name__ == "__main__":
    run()
