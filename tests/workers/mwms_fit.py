"""One worker of a MultiWorkerMirroredStrategy cluster (started by test_distribute.py).

Usage: python mwms_fit.py OUT_DIR [single]
With TF_CONFIG set it joins the cluster; with "single" it trains alone on the
same global batches, for comparison. Writes OUT_DIR/result_<index>.npz.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfk_trainer as tfk  # noqa: E402

N, D, C, GLOBAL_BATCH = 256, 6, 3, 32


def main() -> None:
    out_dir = sys.argv[1]
    single = len(sys.argv) > 2 and sys.argv[2] == "single"
    if single:
        strategy = tf.distribute.get_strategy()
        index = "single"
    else:
        strategy = tfk.distribute.resolve("multi_worker_mirrored", communication="ring")
        index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype("float32")
    y = rng.integers(0, C, N)
    with strategy.scope():
        keras.utils.set_random_seed(7)
        net = keras.Sequential(
            [
                keras.Input((D,)),
                keras.layers.Dense(16, activation="relu"),
                keras.layers.Dense(C, activation="softmax"),
            ]
        )
        model = tfk.Model(net)
        model.compile(
            keras.optimizers.SGD(0.1),
            "sparse_categorical_crossentropy",
            metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")],
            steps_per_execution=2,
        )
    own_dir = os.path.join(out_dir, f"worker_{index}")  # each worker is given its own directory
    callbacks = [
        tfk.callbacks.TensorBoard(os.path.join(own_dir, "logs")),
        tfk.callbacks.ModelCheckpoint(os.path.join(own_dir, "checkpoints", "ckpt-{epoch}")),
        tfk.callbacks.BackupAndRestore(os.path.join(own_dir, "backup"), delete_checkpoint=False),
    ]
    history = model.fit(
        x, y, batch_size=GLOBAL_BATCH, epochs=3, shuffle=False, verbose=0, callbacks=callbacks
    )
    model.export(os.path.join(own_dir, "export"))
    evaluation = model.evaluate(x, y, batch_size=GLOBAL_BATCH, return_dict=True, verbose=0)
    predictions = model.predict(x[:100], batch_size=GLOBAL_BATCH, verbose=0)
    np.savez(
        os.path.join(out_dir, f"result_{index}.npz"),
        *model.get_weights(),
        loss=np.array(history.history["loss"]),
        accuracy=np.array(history.history["accuracy"]),
        eval_loss=np.array(evaluation["loss"]),
        eval_top2=np.array(evaluation["top2"]),
        predictions=predictions,
        is_chief=np.array(tfk.distribute.is_chief(strategy)),
    )


if __name__ == "__main__":
    main()
