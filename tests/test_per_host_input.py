"""Per-host input: `tfk.DatasetFunction`, arrays outside every graph, known static counts.

Issue 18 items 3 and 9: user input as a function of `tf.distribute.InputContext`
(each worker of a loopback cluster reads only its shard, results equal one
process's), arrays never embedded in a dataset graph as constants, and static
"drop" mode keeping the batch count known where the batches are already full.
"""

import os
import subprocess
import sys

import cluster_helpers
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfk_trainer as tfk
from tfk_trainer.data.adapters import ArrayAdapter, DatasetAdapter
from tfk_trainer.data.static import StaticShapeAdapter
from tfk_trainer.engine.loop import EpochPlan, Iterators

WORKER = os.path.join(os.path.dirname(__file__), "workers", "per_host_fit.py")
ATOL = 1e-6


def _net(seed=3, d=4, c=2):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((d,)), keras.layers.Dense(c)])


def _compiled(strategy=None, **compile_kwargs):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = tfk.Model(_net())
        model.compile(
            keras.optimizers.SGD(0.1),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            **compile_kwargs,
        )
    return model


def _data(n=96, d=4):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype("float32")
    return x, (x.sum(1) > 0).astype("int64")


# -- DatasetFunction -------------------------------------------------------------


def test_dataset_function_fit_evaluate_predict_equal_the_plain_dataset():
    x, y = _data()
    contexts = []

    def dataset_fn(context):
        contexts.append((context.input_pipeline_id, context.num_input_pipelines))
        batch = context.get_per_replica_batch_size(16)
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)

    plain = _compiled()
    h1 = plain.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    by_fn = _compiled()
    h2 = by_fn.fit(
        tfk.DatasetFunction(dataset_fn),
        epochs=2,
        verbose=0,
        validation_data=tfk.DatasetFunction(dataset_fn),
    )
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(h2.history[key], h1.history[key], rtol=0, atol=ATOL)
    for a, b in zip(by_fn.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)
    assert set(contexts) == {(0, 1)}
    ev = by_fn.evaluate(tfk.DatasetFunction(dataset_fn), return_dict=True, verbose=0)
    np.testing.assert_allclose(ev["loss"], h2.history["val_loss"][-1], rtol=0, atol=ATOL)
    xs = tfk.DatasetFunction(lambda c: tf.data.Dataset.from_tensor_slices(x).batch(10))
    np.testing.assert_allclose(
        by_fn.predict(xs, verbose=0), by_fn.predict(x, batch_size=10, verbose=0), atol=ATOL
    )


def test_dataset_function_under_four_replicas_gets_per_replica_batches(mirrored_strategy):
    """Each replica takes one element (a per-replica batch) per step: the global
    batch is four of them, and training equals one device on the global batches."""
    x, y = _data(128)
    seen = []

    def dataset_fn(context):
        seen.append(context.num_replicas_in_sync)
        per_replica = context.get_per_replica_batch_size(32)
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(per_replica)

    one = _compiled()
    h1 = one.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    four = _compiled(mirrored_strategy(4))
    h4 = four.fit(tfk.DatasetFunction(dataset_fn), epochs=2, verbose=0)
    assert 4 in seen
    np.testing.assert_allclose(h4.history["loss"], h1.history["loss"], rtol=0, atol=ATOL)
    for a, b in zip(four.get_weights(), one.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)


def test_an_infinite_dataset_function_needs_steps_and_its_iterator_persists():
    x, y = _data(64)
    calls = []
    read = []

    def record(i):
        read.append(int(i))
        return i

    def dataset_fn(context):
        calls.append(context)
        ids = tf.data.Dataset.counter().map(
            lambda i: tf.numpy_function(record, [i], tf.int64, stateful=True)
        )
        data = tf.data.Dataset.from_tensor_slices((x, y)).repeat()
        return tf.data.Dataset.zip(ids, data).map(lambda i, xy: xy).batch(8)

    model = _compiled()
    with pytest.raises(ValueError, match="steps_per_epoch"):
        model.fit(tfk.DatasetFunction(dataset_fn), epochs=1, verbose=0)
    calls.clear()
    model.fit(tfk.DatasetFunction(dataset_fn), epochs=3, steps_per_epoch=2, verbose=0)
    # One probe (the element spec) and one pipeline for all three epochs.
    assert len(calls) == 2
    # The epochs continued the same stream: examples 0..47 (prefetching may read ahead).
    assert sorted(read)[:48] == list(range(48))
    assert int(model.optimizer.iterations.numpy()) == 6


def test_dataset_function_errors_name_the_argument():
    x, y = _data(16)
    with pytest.raises(TypeError, match="callable"):
        tfk.DatasetFunction("not a function")
    with pytest.raises(TypeError, match="InputOptions"):
        tfk.DatasetFunction(lambda c: None, input_options={"a": 1})
    model = _compiled()
    with pytest.raises(TypeError, match="must return a tf.data.Dataset; it returned list"):
        model.fit(tfk.DatasetFunction(lambda c: [x, y]), verbose=0)
    good = tfk.DatasetFunction(lambda c: tf.data.Dataset.from_tensor_slices((x, y)).batch(4))
    with pytest.raises(ValueError, match="`y` must not be given when `x` is a DatasetFunction"):
        model.fit(good, y, verbose=0)
    with pytest.warns(UserWarning, match="batch_size"):
        model.evaluate(good, batch_size=4, verbose=0)
    empty = tfk.DatasetFunction(lambda c: tf.data.Dataset.from_tensor_slices((x, y)).take(0))
    with pytest.raises(ValueError, match="empty"):
        model.fit(empty, verbose=0)


# -- arrays outside every graph --------------------------------------------------


def _largest_constant(dataset: tf.data.Dataset) -> int:
    """Bytes of the largest Const in the dataset's serialised graph (what auto-sharding,
    cloning per input worker and tf.data's rewrites serialise)."""
    graph_bytes = tf.raw_ops.DatasetToGraphV2(
        input_dataset=tf.data.experimental.to_variant(dataset),
        external_state_policy=0,  # warn: the NumPy reader is Python state, kept by reference
        strip_device_assignment=True,
    )
    graph = tf.compat.v1.GraphDef.FromString(graph_bytes.numpy())
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    sizes = [len(n.attr["value"].tensor.tensor_content) for n in nodes if n.op == "Const"]
    return max(sizes, default=0)


def test_the_inspection_sees_an_embedded_array():
    """Control: a `from_tensors` pipeline does carry its array as a constant."""
    big = np.zeros((256, 1024), np.float32)  # 1 MiB
    assert _largest_constant(tf.data.Dataset.from_tensors(big)) >= big.nbytes


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("static", [None, "drop", "pad"])
def test_a_large_array_fit_embeds_no_constant_in_any_graph(shuffle, static, monkeypatch):
    n, d = 8192, 1024  # 32 MiB of float32
    x = np.ones((n, d), np.float32)
    y = np.zeros((n,), np.int64)
    bound = 64 * 1024
    adapter = ArrayAdapter(x, y, batch_size=256, shuffle=shuffle, static=static)
    for repeat in (False, True):
        assert _largest_constant(adapter.get_dataset(repeat=repeat)) < bound

    strategy = tf.distribute.get_strategy()
    distributed = []
    original = strategy.experimental_distribute_dataset

    def record(dataset, *args, **kwargs):
        distributed.append(dataset)
        return original(dataset, *args, **kwargs)

    monkeypatch.setattr(strategy, "experimental_distribute_dataset", record)
    with strategy.scope():
        model = tfk.Model(
            keras.Sequential([keras.Input((d,)), keras.layers.Dense(2)]),
            static_shapes=static is not None,
            static_remainder=static if static == "drop" else "drop",
        )
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=256, epochs=1, steps_per_epoch=2, shuffle=shuffle, verbose=0)
    assert distributed
    for dataset in distributed:
        assert _largest_constant(dataset) < bound


def test_arrays_keep_their_values_and_order_through_the_numpy_reader():
    x = {"a": np.arange(50 * 3, dtype="float32").reshape(50, 3), "s": np.array([b"r"] * 50)}
    y = np.arange(50)
    batches = list(ArrayAdapter(x, y, batch_size=8, shuffle=False).get_dataset())
    assert [len(b[1]) for b in batches] == [8] * 6 + [2]
    np.testing.assert_array_equal(np.concatenate([b[0]["a"] for b in batches]), x["a"])
    assert batches[0][0]["a"].shape.as_list() == [8, 3]
    shuffled = list(ArrayAdapter(x, y, batch_size=8, shuffle=True, seed=1).get_dataset())
    order = np.concatenate([b[1] for b in shuffled])
    assert sorted(order.tolist()) == list(range(50)) and order.tolist() != list(range(50))
    np.testing.assert_array_equal(
        np.concatenate([b[0]["a"] for b in shuffled]), x["a"][order]
    )


# -- static "drop": the count stays known -----------------------------------------


def test_static_drop_keeps_the_count_known_for_full_batches():
    base = tf.data.Dataset.from_tensor_slices((np.zeros((100, 3), "float32"), np.zeros(100)))
    full = StaticShapeAdapter(DatasetAdapter(base.batch(8, drop_remainder=True)), "drop")
    assert full.num_batches == 12 and full.exact_batches
    assert len(list(full.get_dataset())) == 12
    plan = EpochPlan.create(full, None, "steps_per_epoch")
    assert plan.steps == 12
    assert Iterators(tf.distribute.get_strategy(), plan, 0).exact  # the unconditional loop
    # With steps_per_epoch, a dataset that does not repeat may end: checked reads.
    persistent = EpochPlan.create(full, 5, "steps_per_epoch")
    assert not Iterators(tf.distribute.get_strategy(), persistent, 0).exact

    ragged_end = StaticShapeAdapter(DatasetAdapter(base.batch(8)), "drop")
    assert ragged_end.num_batches is None and not ragged_end.exact_batches
    assert len(list(ragged_end.get_dataset())) == 12  # the partial batch is dropped

    arrays = ArrayAdapter(np.zeros((100, 3)), np.zeros(100), batch_size=8, static="drop")
    assert arrays.num_batches == 12 and arrays.exact_batches


def test_static_drop_fit_on_a_full_batch_dataset_uses_the_exact_loop():
    x, y = _data(96)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16, drop_remainder=True)
    model = tfk.Model(_net(), static_shapes=True, static_remainder="drop")
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    reference = tfk.Model(_net())
    reference.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    h = model.fit(dataset, epochs=2, verbose=0)
    r = reference.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(h.history["loss"], r.history["loss"], rtol=0, atol=ATOL)
    assert int(model.optimizer.iterations.numpy()) == 12


# -- a two-worker loopback cluster -------------------------------------------------


@pytest.mark.timeout(400)
def test_two_workers_each_read_only_their_shard_and_match_one_process(tmp_path):
    procs = cluster_helpers.launch(WORKER, [str(tmp_path)], tmp_path)
    single_env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    try:
        single = subprocess.run(
            [sys.executable, WORKER, str(tmp_path), "single"],
            env=single_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert single.returncode == 0, single.stderr[-3000:]
    finally:
        cluster_helpers.finish(procs, tmp_path, timeout=300)

    reference = np.load(tmp_path / "result_single.npz")
    workers = [np.load(tmp_path / f"result_{i}.npz") for i in range(2)]
    n = 256
    for index, result in enumerate(workers):
        read = result["read"]
        # Only this worker's shard, every example of it, once per epoch and once in evaluate.
        assert set(read.tolist()) == set(range(index, n, 2)), index
        assert np.bincount(read, minlength=n)[index::2].tolist() == [3] * (n // 2)
        pipelines = {tuple(c) for c in result["contexts"]}
        assert (index, 2, 2) in pipelines
    assert sorted(reference["read"].tolist()) == sorted(list(range(n)) * 3)

    weight_keys = [k for k in reference.files if k.startswith("arr_")]
    assert weight_keys
    keys = ["loss", "eval_loss", "array_loss", "array_weights", "numpy_loss", "numpy_weights"]
    for key in weight_keys + keys:
        np.testing.assert_allclose(workers[0][key], workers[1][key], rtol=0, atol=ATOL, err_msg=key)
        np.testing.assert_allclose(workers[0][key], reference[key], rtol=0, atol=ATOL, err_msg=key)


# -- the binary's TFRecord source ----------------------------------------------------


def test_tfrecord_dataset_reads_the_written_files_and_shards_by_file(tmp_path):
    import ml_collections

    from tfk_trainer import registry
    from tfk_trainer.train import data as train_data

    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 2, 3)).astype("float32")
    y = rng.integers(0, 4, 40)
    train_paths = train_data.write_tfrecords(x, y, str(tmp_path / "train"), num_shards=4)
    train_data.write_tfrecords(x[:8], y[:8], str(tmp_path / "test"), num_shards=2)
    assert len(train_paths) == 4 and all(tf.io.gfile.exists(p) for p in train_paths)
    entry = registry.get_dataset("tfrecord")
    config = ml_collections.ConfigDict(
        {
            **dict(entry.defaults),
            "train_pattern": str(tmp_path / "train-*"),
            "test_pattern": str(tmp_path / "test-*"),
            "input_shape": (2, 3),
            "num_classes": 4,
        }
    )
    assert entry.check(config) == []
    splits = entry.fn(config)
    assert splits.input_shape == (2, 3) and splits.validation is None
    rows = list(splits.train.as_numpy_iterator())
    assert len(rows) == 40
    got = {(float(r[0].sum()), int(r[1])) for r in rows}
    assert got == {(float(a.sum()), int(b)) for a, b in zip(x, y)}
    np.testing.assert_allclose(
        sorted(r[0].sum() for r in rows), sorted(x.reshape(40, -1).sum(1)), rtol=0, atol=1e-5
    )
    # Each host opens only its own files under several workers.
    policy = splits.train.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.FILE
    # A file pattern that matches nothing is a config error naming the key.
    bad = ml_collections.ConfigDict({**config.to_dict(), "train_pattern": str(tmp_path / "no-*")})
    assert any("data.train_pattern" in p and "matches no file" in p for p in entry.check(bad))


def test_tfrecord_dataset_trains_through_the_model(tmp_path):
    from tfk_trainer.train import data as train_data

    x, y = _data(64)
    train_data.write_tfrecords(x, y, str(tmp_path / "t"), num_shards=2)
    dataset = train_data.tfrecord_files(str(tmp_path / "t-*"), (4,))
    model = _compiled()
    history = model.fit(dataset.batch(16), epochs=2, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 8
    assert np.isfinite(history.history["loss"]).all()
