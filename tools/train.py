"""Thin entry point of the training binary (the same as the `tfk-train` console script).

    .venv/bin/python tools/train.py --config=configs/fashion_mnist_mlp.py \
        --model_dir=/tmp/tfk_fashion_mnist [--mode=...] [--config.train.epochs=3]

See tfk_trainer/train/main.py for the flags and exit codes. Before anything
imports TensorFlow, `tfk_trainer/train/startup.py` (loaded by path, so the
package, which imports TensorFlow, is not imported yet) sets
TF_CPP_MIN_LOG_LEVEL=2 unless you set it, and hides TF's CUDA start-up lines.
"""

import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _quiet_tensorflow_startup() -> None:
    path = os.path.join(REPO, "tfk_trainer", "train", "startup.py")
    spec = importlib.util.spec_from_file_location("_tfk_train_startup", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.quiet_tensorflow_startup()


_quiet_tensorflow_startup()

from tfk_trainer.train.main import run  # noqa: E402

if __name__ == "__main__":
    run()
