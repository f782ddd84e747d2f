"""One worker of a two-worker cluster fed per host (started by test_per_host_input.py).

Usage: python per_host_fit.py OUT_DIR [single]
With TF_CONFIG set it joins the cluster; with "single" it trains alone on the
same global batches. Two fits: a `tfk.DatasetFunction` whose worker `i` reads
only the examples with `id % 2 == i` (every example read is recorded), and
shuffled arrays, as tensors and through the NumPy reader (each host gathers
only its replicas' rows). Writes
OUT_DIR/result_<index>.npz.
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
from tfk_trainer.data import adapters  # noqa: E402

N, D, C, GLOBAL_BATCH, WORKERS = 256, 6, 3, 32, 2


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype("float32")
    y = rng.integers(0, C, N).astype("int64")
    return x, y


def _model(strategy):
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
            metrics=["accuracy"],
            steps_per_execution=2,
        )
    return model


def main() -> None:
    out_dir = sys.argv[1]
    single = len(sys.argv) > 2 and sys.argv[2] == "single"
    if single:
        strategy = tf.distribute.get_strategy()
        index = "single"
    else:
        strategy = tfk.distribute.resolve("multi_worker_mirrored", communication="ring")
        index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    x, y = _data()
    read: list[int] = []
    contexts: list[tuple[int, int, int]] = []

    def record(ids):
        read.extend(int(i) for i in ids)
        return ids

    def shard(pipeline: int, per_replica: int) -> tf.data.Dataset:
        ids = np.arange(pipeline, N, WORKERS)
        return tf.data.Dataset.from_tensor_slices((x[ids], y[ids], ids)).batch(per_replica)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        contexts.append(
            (context.input_pipeline_id, context.num_input_pipelines, context.num_replicas_in_sync)
        )
        per_replica = context.get_per_replica_batch_size(GLOBAL_BATCH)
        if context.num_input_pipelines == 1:
            # One process: the global batch is both workers' batches side by side.
            half = GLOBAL_BATCH // WORKERS
            dataset = tf.data.Dataset.zip(tuple(shard(w, half) for w in range(WORKERS))).map(
                lambda *parts: tuple(tf.concat(p, 0) for p in zip(*parts))
            )
        else:
            dataset = shard(context.input_pipeline_id, per_replica)

        def tag(bx, by, ids):
            done = tf.numpy_function(record, [ids], tf.int64, stateful=True)
            with tf.control_dependencies([done]):
                return tf.identity(bx), tf.identity(by)

        return dataset.map(tag)

    model = _model(strategy)
    history = model.fit(tfk.DatasetFunction(dataset_fn), epochs=2, verbose=0)
    function_weights = model.get_weights()
    function_eval = model.evaluate(
        tfk.DatasetFunction(dataset_fn), return_dict=True, verbose=0
    )

    array_model = _model(strategy)
    array_history = array_model.fit(
        x, y, batch_size=GLOBAL_BATCH, epochs=2, shuffle=True, verbose=0
    )
    array_model_weights = array_model.get_weights()
    # The same with the NumPy reader (used for large arrays), forced for small ones.
    adapters.IN_GRAPH_MAX_BYTES = 0
    numpy_model = _model(strategy)
    numpy_history = numpy_model.fit(
        x, y, batch_size=GLOBAL_BATCH, epochs=2, shuffle=True, verbose=0
    )
    np.savez(
        os.path.join(out_dir, f"result_{index}.npz"),
        *function_weights,
        loss=np.array(history.history["loss"]),
        eval_loss=np.array(function_eval["loss"]),
        array_loss=np.array(array_history.history["loss"]),
        array_weights=np.concatenate([w.ravel() for w in array_model_weights]),
        numpy_loss=np.array(numpy_history.history["loss"]),
        numpy_weights=np.concatenate([w.ravel() for w in numpy_model.get_weights()]),
        read=np.array(read, dtype=np.int64),
        contexts=np.array(contexts, dtype=np.int64),
    )


if __name__ == "__main__":
    main()
