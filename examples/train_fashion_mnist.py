"""Trains an MLP on the real Fashion-MNIST with the tfk_trainer Python API.

The main job (``tools/main_job.sh``) trains the same model with the ``tfk-train``
binary and ``configs/fashion_mnist_mlp.py``; this example does it by hand.

Reads the data from disk (Debian package ``dataset-fashion-mnist``; see
``tfk_trainer.datasets.load_fashion_mnist``), trains with ``tfk.Model.fit``,
evaluates on the 10,000 test images and writes to ``--model_dir``:

* ``summary.json``: per-epoch history, test results, wall time and flags;
* ``final.weights.h5``: the network's weights.

Exits with status 1 if the test accuracy is below the acceptance bar (0.85).

Usage (after ``bash tools/setup_env.sh``):

  python examples/train_fashion_mnist.py --model_dir=/tmp/tfk_fashion_mnist --epochs=5
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Hide TF's C++ INFO chatter.

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import tfk_trainer as tfk  # noqa: E402
from tfk_trainer.datasets import load_fashion_mnist  # noqa: E402

ACCEPTANCE_TEST_ACCURACY = 0.85

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", "/tmp/tfk_fashion_mnist", "Where summary.json and weights go.")
flags.DEFINE_integer("epochs", 5, "Training epochs.")
flags.DEFINE_integer("batch_size", 128, "Training batch size.")
flags.DEFINE_integer("steps_per_execution", 16, "Train steps run per tf.function call.")
flags.DEFINE_integer("seed", 0, "Seed for keras.utils.set_random_seed.")
flags.DEFINE_string("verbose", "auto", 'Verbosity for fit: "auto", 0, 1 or 2.')


def _parse_verbose(value: str) -> str | int:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise app.UsageError(f'--verbose must be "auto", 0, 1 or 2, got {value!r}') from None


def _to_jsonable(value: Any) -> Any:
    """Converts numpy/TF scalars and arrays (as found in History) to plain Python."""
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, tf.Tensor):
        value = value.numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _accuracy(results: dict[str, Any]) -> float:
    """Finds the accuracy entry in evaluate's dict ("accuracy", or e.g. "acc")."""
    if "accuracy" in results:
        return float(results["accuracy"])
    for key, value in results.items():
        if "acc" in key:
            return float(value)
    raise KeyError(f"no accuracy in evaluate() results: {sorted(results)}")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    verbose = _parse_verbose(FLAGS.verbose)
    model_dir = FLAGS.model_dir
    os.makedirs(model_dir, exist_ok=True)

    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    logging.info("Fashion-MNIST: train %s, test %s", x_train.shape, x_test.shape)

    keras.utils.set_random_seed(FLAGS.seed)
    net = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model = tfk.Model(net)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=FLAGS.steps_per_execution,
    )

    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        batch_size=FLAGS.batch_size,
        epochs=FLAGS.epochs,
        validation_split=0.1,
        verbose=verbose,
    )
    train_seconds = time.perf_counter() - start
    results = model.evaluate(x_test, y_test, batch_size=512, return_dict=True, verbose=0)
    wall_seconds = time.perf_counter() - start

    test_loss = float(results["loss"])
    test_accuracy = _accuracy(results)
    summary = {
        "epochs": FLAGS.epochs,
        "batch_size": FLAGS.batch_size,
        "steps_per_execution": FLAGS.steps_per_execution,
        "seed": FLAGS.seed,
        "train_wall_seconds": train_seconds,
        "wall_seconds": wall_seconds,
        "history": _to_jsonable(history.history),
        "test": _to_jsonable(results),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "acceptance_test_accuracy": ACCEPTANCE_TEST_ACCURACY,
        "passed": test_accuracy >= ACCEPTANCE_TEST_ACCURACY,
    }
    summary_path = os.path.join(model_dir, "summary.json")
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=2)
    weights_path = os.path.join(model_dir, "final.weights.h5")
    net.save_weights(weights_path)

    print(
        f"\nFashion-MNIST MLP: {FLAGS.epochs} epoch(s), wall time {wall_seconds:.1f}s "
        f"(fit {train_seconds:.1f}s); test loss {test_loss:.4f}, "
        f"test accuracy {test_accuracy:.4f}"
    )
    print(f"Wrote {summary_path} and {weights_path}")
    if test_accuracy < ACCEPTANCE_TEST_ACCURACY:
        print(
            f"FAILED: test accuracy {test_accuracy:.4f} is below the acceptance bar "
            f"{ACCEPTANCE_TEST_ACCURACY:.2f}",
            file=sys.stderr,
        )
        sys.exit(1)
    print(f"PASSED: test accuracy {test_accuracy:.4f} >= {ACCEPTANCE_TEST_ACCURACY:.2f}")


if __name__ == "__main__":
    app.run(main)
