"""A slow MultiWorkerMirroredStrategy worker with BackupAndRestore (test_distribute.py)."""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfk_trainer as tfk  # noqa: E402


class Slow(tfk.callbacks.Callback):
    def __init__(self, flag: str):
        super().__init__()
        self.flag = flag

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.05)
        if int(self.model.optimizer.iterations.numpy()) >= 12:
            open(self.flag, "w").close()


def main() -> None:
    work = sys.argv[1]
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    strategy = tfk.distribute.resolve("multi_worker_mirrored", communication="ring")
    x = np.random.default_rng(0).normal(size=(1024, 6)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    with strategy.scope():
        keras.utils.set_random_seed(1)
        model = tfk.Model(
            keras.Sequential([keras.Input((6,)), keras.layers.Dense(1, activation="sigmoid")])
        )
        model.compile("sgd", "binary_crossentropy")
    callbacks = [
        Slow(os.path.join(work, f"running{index}")),
        tfk.callbacks.BackupAndRestore(os.path.join(work, "backup"), save_freq=4),
    ]
    try:
        model.fit(x, y, batch_size=64, epochs=3, verbose=0, shuffle=False, callbacks=callbacks)
    except tfk.PeerUnavailableError as e:
        print(f"PEER LOST: {e}", flush=True)
        sys.exit(3)
    print(f"DONE iterations={int(model.optimizer.iterations.numpy())}", flush=True)


if __name__ == "__main__":
    main()
