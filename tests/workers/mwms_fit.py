"""One worker of a MultiWorkerMirroredStrategy cluster (started by test_distribute.py).

Usage: python mwms_fit.py OUT_DIR [single | predict [REPLICAS_PER_WORKER]]
With TF_CONFIG set it joins the cluster; with "single" it trains alone on the
same global batches, for comparison. Writes OUT_DIR/result_<index>.npz.

"predict" (started by test_predict_order.py) only predicts, with every input
kind (arrays, a tf.data dataset, a generator, a `tfk.DatasetFunction`), and
writes the predictions and the weights to OUT_DIR/predict_<index>.npz.
REPLICAS_PER_WORKER > 1 gives each worker that many logical CPU replicas: a
CPU stand-in for a worker with several GPUs (TensorFlow gives a CPU worker one
replica, so the strategy's local devices are replaced before it is made).
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


def _worker_with_replicas(replicas: int) -> tf.distribute.Strategy:
    """A MultiWorkerMirroredStrategy whose worker runs `replicas` logical CPU replicas."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * replicas
    )
    if replicas > 1:
        from tensorflow.python.distribute import collective_all_reduce_strategy as collective

        def local_cpus(self, cluster_resolver, worker_device):
            return tuple(f"{worker_device}/device:CPU:{i}" for i in range(replicas)), "CPU"

        collective.CollectiveAllReduceExtended._initialize_local_devices = local_cpus
    return tfk.distribute.resolve("multi_worker_mirrored", communication="ring")


def predict_main(out_dir: str, replicas: int) -> None:
    """Predictions of every input kind, with a partial last batch (100 rows, batches of 16)."""
    strategy = _worker_with_replicas(replicas)
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    n, batch, workers = 100, 16, 2
    x = np.arange(n * D, dtype="float32").reshape(n, D) / (n * D)
    with strategy.scope():
        keras.utils.set_random_seed(7)
        model = tfk.Model(keras.Sequential([keras.Input((D,)), keras.layers.Dense(C)]))
        model.compile(steps_per_execution=2)

    def generator():
        for start in range(0, n, batch):
            yield (x[start : start + batch],)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        # Host p reads rows [s * batch + p * half, s * batch + (p + 1) * half) of each
        # batch s, in per-replica batches: gathered host after host, that is input
        # order. The last batch (4 rows) is all host 0's: host 1's data ends a step
        # earlier, and its replicas get empty batches of the right shape (after the
        # generator's relaxed spec was traced too).
        half = batch // context.num_input_pipelines
        start = context.input_pipeline_id * half
        rows = tf.data.Dataset.from_tensor_slices(x).batch(batch)
        mine = rows.map(lambda b: b[start : start + half]).filter(lambda b: tf.size(b) > 0)
        return mine.unbatch().batch(context.get_per_replica_batch_size(batch))

    results = {
        "arrays": model.predict(x, batch_size=batch, verbose=0),
        "dataset": model.predict(tf.data.Dataset.from_tensor_slices(x).batch(batch), verbose=0),
        "generator": model.predict(generator(), verbose=0),
        "function": model.predict(tfk.DatasetFunction(dataset_fn), verbose=0),
    }
    assert strategy.num_replicas_in_sync == workers * replicas, strategy.num_replicas_in_sync
    weights = {f"weight_{i}": w for i, w in enumerate(model.get_weights())}
    np.savez(os.path.join(out_dir, f"predict_{index}.npz"), x=x, **weights, **results)


def main() -> None:
    out_dir = sys.argv[1]
    if len(sys.argv) > 2 and sys.argv[2] == "predict":
        predict_main(out_dir, int(sys.argv[3]) if len(sys.argv) > 3 else 1)
        return
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
