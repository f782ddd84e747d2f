"""A training run that can be killed and restarted (started by test_fault_tolerance.py).

Usage: python resumable_fit.py WORK_DIR [PAUSE_AT_STEP [PHASE]]
Trains with BackupAndRestore(WORK_DIR/backup, save_freq=2) and op determinism
on; writes WORK_DIR/final.npz when fit completes. With PAUSE_AT_STEP it
writes WORK_DIR/ready once that optimizer step is reached and then slows
down, so the test can deliver a signal at a known point. PHASE says where:
"train" (after a training execution, the default), "validation" (inside the
validation run) or "save" (inside a backup write: data written, pointer not
yet updated).
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


def announce(work_dir: str, step: int) -> None:
    with open(os.path.join(work_dir, "ready"), "w") as f:
        f.write(str(step))
    time.sleep(0.5)


class Pacer(tfk.callbacks.Callback):
    """Announces a step (or a validation batch) so the test can signal us there."""

    def __init__(self, work_dir: str, pause_at: int, phase: str):
        super().__init__()
        self.work_dir = work_dir
        self.pause_at = pause_at
        self.phase = phase

    def _reached(self) -> bool:
        return int(self.model.optimizer.iterations.numpy()) >= self.pause_at

    def on_train_batch_end(self, batch, logs=None):
        if self.phase == "train" and self._reached():
            announce(self.work_dir, int(self.model.optimizer.iterations.numpy()))

    def on_test_batch_end(self, batch, logs=None):
        if self.phase == "validation" and self._reached():
            announce(self.work_dir, int(self.model.optimizer.iterations.numpy()))


def slow_down_backup_writes(work_dir: str, pause_at: int) -> None:
    """Stretches the gap between writing a backup and publishing it."""
    original = tf.train.CheckpointManager.save

    def save(self, checkpoint_number=None, check_interval=True, options=None):
        if checkpoint_number is not None and checkpoint_number >= pause_at:
            self._checkpoint.write(os.path.join(self.directory, f"ckpt-{checkpoint_number}"))
            announce(work_dir, checkpoint_number)
        return original(
            self,
            checkpoint_number=checkpoint_number,
            check_interval=check_interval,
            options=options,
        )

    tf.train.CheckpointManager.save = save


def main() -> None:
    work_dir = sys.argv[1]
    pause_at = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    phase = sys.argv[3] if len(sys.argv) > 3 else "train"
    if pause_at and phase == "save":
        slow_down_backup_writes(work_dir, pause_at)
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
    if pause_at and phase in ("train", "validation"):
        callbacks.append(Pacer(work_dir, pause_at, phase))
    history = model.fit(
        x, y, batch_size=16, epochs=4, validation_split=0.2, verbose=0, callbacks=callbacks
    )
    np.savez(
        os.path.join(work_dir, "final.npz"),
        *model.get_weights(),
        iterations=np.array(int(model.optimizer.iterations.numpy())),
        last_loss=np.array(
            history.history.get("loss", [np.nan])[-1]
        ),  # empty if resumed at the end
    )


if __name__ == "__main__":
    main()
