"""A training run that can be killed and restarted (started by test_fault_tolerance.py).

Usage: python resumable_fit.py WORK_DIR [PAUSE_AT_STEP]
Trains with BackupAndRestore(WORK_DIR/backup, save_freq=2) and op determinism
on; writes WORK_DIR/final.npz when fit completes. With PAUSE_AT_STEP it
writes WORK_DIR/ready after that optimizer step and then slows down, so the
test can deliver a signal at a known point.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfk_trainer as tfk  # noqa: E402

tf.config.experimental.enable_op_determinism()


class Pacer(tfk.callbacks.Callback):
    """Announces a step so the test can signal us there, then slows down."""

    def __init__(self, work_dir: str, pause_at: int):
        super().__init__()
        self.work_dir = work_dir
        self.pause_at = pause_at

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if self.pause_at and step >= self.pause_at:
            with open(os.path.join(self.work_dir, "ready"), "w") as f:
                f.write(str(step))
            time.sleep(0.5)


def main() -> None:
    work_dir = sys.argv[1]
    pause_at = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    keras.utils.set_random_seed(21)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 8)).astype("float32")
    y = rng.integers(0, 4, 240)
    net = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dropout(0.25),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    model = tfk.Model(net)
    model.compile(
        "adam", "sparse_categorical_crossentropy", metrics=["accuracy"], steps_per_execution=2
    )
    callbacks = [
        tfk.callbacks.BackupAndRestore(
            os.path.join(work_dir, "backup"), save_freq=2, delete_checkpoint=False
        )
    ]
    if pause_at:
        callbacks.append(Pacer(work_dir, pause_at))
    history = model.fit(
        x, y, batch_size=16, epochs=4, validation_split=0.2, verbose=0, callbacks=callbacks
    )
    np.savez(
        os.path.join(work_dir, "final.npz"),
        *model.get_weights(),
        iterations=np.array(int(model.optimizer.iterations.numpy())),
        last_loss=np.array(history.history["loss"][-1]),
    )


if __name__ == "__main__":
    main()
