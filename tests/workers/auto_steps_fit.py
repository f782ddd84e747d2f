"""One worker of a two-worker cluster with `steps_per_execution="auto"` (started by
test_replicas.py).

Usage: python auto_steps_fit.py OUT_DIR
Each worker's tuner is set up to choose differently (worker 0, the chief,
aims at long executions; worker 1 at one step each); the chief's value must
win on both. Writes OUT_DIR/auto_<index>.json: the batch indices at which
train and test batch hooks ran, and the tuned values.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfk_trainer as tfk  # noqa: E402
from tfk_trainer.engine import tuning  # noqa: E402

N, D, GLOBAL_BATCH = 256, 4, 8


class Boundaries(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.train, self.test = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.train.append(int(batch))

    def on_test_batch_end(self, batch, logs=None):
        self.test.append(int(batch))


def main() -> None:
    out_dir = sys.argv[1]
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    # The chief wants 1024-step executions, worker 1 one-step ones.
    tuning.StepsPerExecutionTuner.__init__.__kwdefaults__["target_seconds"] = (
        100.0 if index == 0 else 1e-12
    )
    strategy = tfk.distribute.resolve("multi_worker_mirrored", communication="ring")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype("float32")
    y = rng.normal(size=(N, 1)).astype("float32")
    with strategy.scope():
        keras.utils.set_random_seed(5)
        model = tfk.Model(keras.Sequential([keras.Input((D,)), keras.layers.Dense(1)]))
        model.compile(keras.optimizers.SGD(0.01), "mse", steps_per_execution="auto")
    seen = Boundaries()
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=2, shuffle=False, verbose=0, callbacks=[seen])
    model.evaluate(x, y, batch_size=GLOBAL_BATCH, verbose=0, callbacks=[seen])
    tuners = model._state.execution_lengths._tuners  # test-only peek at the tuned values
    result = {
        "train": seen.train,
        "test": seen.test,
        "tuned": {mode: t.current for mode, t in tuners.items()},
        "weights": [w.tolist() for w in model.get_weights()],
    }
    with open(os.path.join(out_dir, f"auto_{index}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
