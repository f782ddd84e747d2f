"""A MultiWorkerMirroredStrategy worker with BackupAndRestore, to be preempted (test_preemption.py).

Usage: python mwms_preempt.py WORK_DIR
Trains 4 epochs of 16 steps with a shared `WORK_DIR/backup`, slowly (a short
sleep per batch) so that a test can send SIGTERM mid-training: each worker
touches `WORK_DIR/running<index>` once the first epoch's backup is written.
On SIGTERM to any worker, every worker exits 143 (BackupAndRestore's
`Preempted`); a finished run writes `WORK_DIR/result_<index>.npz` (weights).
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfk_trainer as tfk  # noqa: E402

N, D, C, GLOBAL_BATCH, EPOCHS = 512, 6, 3, 32, 4
READY_STEP = 20  # after epoch 0's backup (16 steps), well before the end (64)


class Slow(tfk.callbacks.Callback):
    """Sleeps a little per batch; says when training is past the first backup."""

    def __init__(self, flag: str):
        super().__init__()
        self.flag = flag

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.1)
        if int(self.model.optimizer.iterations.numpy()) >= READY_STEP and not os.path.exists(
            self.flag
        ):
            open(self.flag, "w").close()


def main() -> None:
    work = sys.argv[1]
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    strategy = tfk.distribute.resolve("multi_worker_mirrored", communication="ring")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype("float32")
    y = rng.integers(0, C, N)
    with strategy.scope():
        keras.utils.set_random_seed(7)
        model = tfk.Model(
            keras.Sequential(
                [
                    keras.Input((D,)),
                    keras.layers.Dense(16, activation="relu"),
                    keras.layers.Dense(C, activation="softmax"),
                ]
            )
        )
        model.compile(
            keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"]
        )
    callbacks = [
        Slow(os.path.join(work, f"running{index}")),
        tfk.callbacks.BackupAndRestore(os.path.join(work, "backup")),
    ]
    model.fit(
        x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks
    )
    print(f"DONE iterations={int(model.optimizer.iterations.numpy())}", flush=True)
    np.savez(os.path.join(work, f"result_{index}.npz"), *model.get_weights())


if __name__ == "__main__":
    main()
