"""`predict` returns rows in input order, whatever the input workers and replicas (issue 18 item 2).

Three levels:

- The rule (`engine/predict_order.py`) as pure functions over
  `(input workers W, replicas per worker R, layout)`, checked against what
  TensorFlow itself does to a global batch: the rebatching and data
  auto-sharding of `experimental_distribute_dataset` run here for many shapes,
  last partial and padded batches included.
- Strategies with no CPU stand-in (a TPU pod's one client over several hosts;
  an in-graph multi-host MirroredStrategy, which TF 2 refuses in eager mode):
  the order is computed by `predict_order.output_order`, the function the
  predict loop calls, from a stand-in strategy that describes the devices
  (`num_replicas_in_sync`, `extended.worker_devices`), and the loop's own
  dispatch and concatenation (`execution._PredictByLayout`,
  `execution._local_outputs`) are run with it.
- End to end: MirroredStrategy on 2 and 4 logical CPUs with every input kind
  (vs one device), and a two-worker loopback MultiWorkerMirroredStrategy
  cluster with one and with two replicas per worker (the second a CPU stand-in
  for workers with several GPUs: tests/workers/mwms_fit.py gives each worker
  two logical CPU replicas). Before the fix, 2 workers x 2 replicas returned
  rows 0-3, 8-11, 4-7, 12-15 of each batch of 16.
"""

import types

import cluster_helpers
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.data.experimental.ops import distribute as tf_data_distribute
from tensorflow.python.distribute import input_ops
from test_distribute import WORKER
from tolerances import ATOL, RTOL

import tfk_trainer as tfk
from tfk_trainer.engine import execution, predict_order
from tfk_trainer.engine.predict_order import PER_PIPELINE, SPLIT

# -- the rule --------------------------------------------------------------------


def test_two_workers_of_two_replicas_hold_pieces_replica_major():
    # Slots w0r0, w0r1, w1r0, w1r1 hold pieces 0, 2, 1, 3 of a split batch.
    assert predict_order.piece_holders(2, 2, SPLIT) == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert predict_order.slot_order(2, 2, SPLIT) == (0, 2, 1, 3)
    assert predict_order.slot_order(2, 2, PER_PIPELINE) == (0, 1, 2, 3)
    # tf-keras's rule for a TPU pod: replicas[r::R] for each r.
    assert predict_order.slot_order(2, 4, SPLIT) == (0, 4, 1, 5, 2, 6, 3, 7)


@pytest.mark.parametrize("workers, replicas", [(1, 1), (1, 4), (3, 1), (4, 1), (1, 8)])
def test_one_input_worker_or_one_replica_each_is_the_identity(workers, replicas):
    for kind in (SPLIT, PER_PIPELINE):
        order = predict_order.slot_order(workers, replicas, kind)
        assert predict_order.is_identity(order), (kind, order)


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_every_order_is_a_permutation(workers, replicas):
    for kind in (SPLIT, PER_PIPELINE):
        assert sorted(predict_order.slot_order(workers, replicas, kind)) == list(
            range(workers * replicas)
        )


def test_bad_layouts_are_named():
    with pytest.raises(ValueError, match="kind"):
        predict_order.piece_holders(2, 2, "interleaved")
    with pytest.raises(ValueError, match="num_input_workers"):
        predict_order.piece_holders(0, 2, SPLIT)
    with pytest.raises(ValueError, match="replicas_per_worker"):
        predict_order.piece_holders(2, True, SPLIT)


def _split_by_tensorflow(dataset, batch, workers, replicas):
    """What each slot `w * R + r` receives at each step from `experimental_distribute_dataset`
    over `workers` input workers: TensorFlow's own rebatching and data auto-sharding
    (input_lib.DistributedDataset), run per worker."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)
    streams = []
    for w in range(workers):
        sizes = tf_data_distribute.batch_sizes_for_worker(batch, workers, replicas, w)
        shard = input_ops.auto_shard_dataset(dataset.rebatch(sizes), workers, w, workers * replicas)
        streams.append([tf.nest.map_structure(np.asarray, e) for e in shard])
    steps = len(streams[0]) // replicas
    assert all(len(s) == steps * replicas for s in streams)
    return [
        [streams[w][s * replicas + r] for w in range(workers) for r in range(replicas)]
        for s in range(steps)
    ]


SHAPES = [
    # (workers, replicas, global batch, rows): full batches, a last partial batch, a
    # last batch smaller than the replica count, a batch that does not divide evenly.
    (2, 2, 8, 16),
    (2, 2, 8, 11),
    (2, 2, 7, 10),
    (2, 4, 16, 37),
    (4, 2, 8, 20),
    (3, 2, 12, 29),
    (2, 3, 12, 13),
    (4, 1, 8, 9),
    (1, 4, 8, 13),
]


@pytest.mark.parametrize("workers, replicas, batch, rows", SHAPES)
def test_the_rule_puts_tensorflows_split_back_in_input_order(workers, replicas, batch, rows):
    dataset = tf.data.Dataset.range(rows).batch(batch)
    order = predict_order.slot_order(workers, replicas, SPLIT)
    got = []
    for slots in _split_by_tensorflow(dataset, batch, workers, replicas):
        step = predict_order.concat_in_order([tf.constant(v) for v in slots], order)
        got.extend(step.numpy().tolist())
    assert got == list(range(rows))


@pytest.mark.parametrize("workers, replicas, batch, rows", SHAPES[:6])
def test_a_padded_last_batch_drops_its_padding_after_the_reorder(workers, replicas, batch, rows):
    """Static-shape mode pads the last batch to the full size and marks the real rows;
    the mask travels with the outputs through the same reorder."""

    def pad(ids):
        n = tf.shape(ids)[0]
        return tf.pad(ids, [[0, batch - n]], constant_values=-1), tf.range(batch) < n

    dataset = tf.data.Dataset.range(rows).batch(batch).map(pad)
    order = predict_order.slot_order(workers, replicas, SPLIT)
    got = []
    for slots in _split_by_tensorflow(dataset, batch, workers, replicas):
        ids = predict_order.concat_in_order([tf.constant(v[0]) for v in slots], order).numpy()
        valid = predict_order.concat_in_order([tf.constant(v[1]) for v in slots], order).numpy()
        assert len(ids) == batch
        got.extend(ids[valid].tolist())
    assert got == list(range(rows))


@pytest.mark.parametrize("workers, replicas, batch, rows", [(2, 2, 8, 11), (3, 2, 12, 29)])
def test_per_pipeline_input_is_already_in_order(workers, replicas, batch, rows):
    """Arrays read per host (data/adapters.py): replica r of host w gets rows
    [(w * R + r) * b, (w * R + r + 1) * b) of each global batch, b = ceil(batch / (W * R))."""
    b = -(-batch // (workers * replicas))
    order = predict_order.slot_order(workers, replicas, PER_PIPELINE)
    got = []
    for start in range(0, rows, batch):
        ids = np.arange(start, min(start + batch, rows))
        slots = [ids[g * b : (g + 1) * b] for g in range(workers * replicas)]
        got.extend(predict_order.concat_in_order([tf.constant(s) for s in slots], order).numpy())
    assert got == list(range(rows))


def test_reorder_rows_moves_blocks_of_any_size():
    # Four replicas' all-gathered rows, 2, 1, 2 and 0 rows (a last partial batch).
    gathered = tf.constant([[0.0], [1.0], [4.0], [2.0], [3.0]])
    sizes = tf.constant([2, 1, 2, 0])
    # Slots hold pieces 0, 2, 1, 3: pieces in order are slots 0, 2, 1, 3.
    out = predict_order.reorder_rows(gathered, sizes, (0, 2, 1, 3))
    np.testing.assert_array_equal(out.numpy().ravel(), [0, 1, 2, 3, 4])
    assert predict_order.reorder_rows(gathered, sizes, (0, 1, 2, 3)) is gathered


# -- strategies with no CPU stand-in: a stand-in that describes the devices ------------


def _stand_in(devices, replicas=None):
    """What `output_order` and the loop read of a strategy: its replica count, this
    client's replica devices, and the per-replica values (`.values`, as PerReplica's)."""
    return types.SimpleNamespace(
        num_replicas_in_sync=replicas or len(devices),
        extended=types.SimpleNamespace(worker_devices=tuple(devices)),
        experimental_local_results=lambda per_replica: tuple(per_replica.values),
    )


TPU_POD = [f"/job:worker/replica:0/task:{h}/device:TPU:{i}" for h in range(2) for i in range(4)]


def test_tpu_pod_of_two_hosts_follows_tf_keras_rule():
    """One client, 2 hosts x 4 cores: local results are host-major; tf-keras's
    `_tpu_multi_host_concat` takes `replicas[r::4]` for each r."""
    strategy = _stand_in(TPU_POD)
    assert predict_order.replica_layout(strategy)[:2] == (2, 4)
    assert predict_order.output_order(strategy, SPLIT) == (0, 4, 1, 5, 2, 6, 3, 7)
    assert predict_order.output_order(strategy, PER_PIPELINE) == tuple(range(8))


def test_workers_with_several_gpus_order_the_all_gathered_replicas():
    """MultiWorkerMirroredStrategy, 2 workers x 2 GPUs: this worker sees its 2 devices of
    4 replicas; the all-gather is worker-major, as tf-keras's `_multi_worker_concat` reads it."""
    local = [f"/job:worker/replica:0/task:1/device:GPU:{i}" for i in range(2)]
    strategy = _stand_in(local, replicas=4)
    assert predict_order.replica_layout(strategy)[:2] == (2, 2)
    assert predict_order.output_order(strategy, SPLIT) == (0, 2, 1, 3)
    assert predict_order.output_order(strategy, PER_PIPELINE) == (0, 1, 2, 3)


def test_in_graph_hosts_listed_interleaved_are_found_by_their_task():
    """Devices given host-interleaved (a multi-host MirroredStrategy's `devices`): the
    position of each slot follows the devices' own order; chief before workers."""
    interleaved = [
        "/job:worker/replica:0/task:0/device:CPU:0",
        "/job:worker/replica:0/task:1/device:CPU:0",
        "/job:worker/replica:0/task:0/device:CPU:1",
        "/job:worker/replica:0/task:1/device:CPU:1",
    ]
    # Pieces 0..3 sit on w0r0, w1r0, w0r1, w1r1: positions 0, 1, 2, 3.
    assert predict_order.output_order(_stand_in(interleaved), SPLIT) == (0, 1, 2, 3)
    chief_last = [
        "/job:worker/replica:0/task:0/device:GPU:0",
        "/job:chief/replica:0/task:0/device:GPU:0",
    ]
    # The chief is input worker 0: its device (position 1) holds piece 0.
    assert predict_order.output_order(_stand_in(chief_last), SPLIT) == (1, 0)


def test_single_host_strategies_keep_replica_order(mirrored_strategy):
    for strategy in (mirrored_strategy(4), tf.distribute.get_strategy()):
        for kind in (SPLIT, PER_PIPELINE):
            order = predict_order.output_order(strategy, kind)
            assert order == tuple(range(strategy.num_replicas_in_sync))


def test_hosts_with_different_replica_counts_are_refused():
    devices = TPU_POD[:7]
    with pytest.raises(ValueError, match="same number of replicas"):
        predict_order.output_order(_stand_in(devices), SPLIT)


def test_the_loop_dispatches_on_the_iterators_layout_and_concatenates_in_order(
    mirrored_strategy,
):
    """`_PredictByLayout` (what `make_predict_loop` returns) picks the order of the
    iterator's input kind; `_local_outputs` concatenates a step's per-replica outputs
    with it. Run with the TPU pod stand-in, one batch of 16 rows split as TF splits it."""
    strategy = _stand_in(TPU_POD)
    built = []

    def build(order):
        built.append(order)
        return lambda iterator, num_steps: order

    loop = execution._PredictByLayout(strategy, build)
    split = types.SimpleNamespace()
    per_pipeline = predict_order.tag_input(
        types.SimpleNamespace(),
        mirrored_strategy(2).distribute_datasets_from_function(lambda c: tf.data.Dataset.range(2)),
    )
    assert loop(split, 1) == (0, 4, 1, 5, 2, 6, 3, 7)
    assert loop(per_pipeline, 1) == tuple(range(8))
    assert loop(split, 1) == (0, 4, 1, 5, 2, 6, 3, 7)
    assert len(built) == 2  # one traced function per order, reused

    (slots,) = _split_by_tensorflow(tf.data.Dataset.range(16).batch(16), 16, 2, 4)
    per_replica = lambda values: types.SimpleNamespace(values=values)  # noqa: E731
    outputs = (
        per_replica([tf.constant(v) for v in slots]),
        per_replica([tf.constant(v) * 10 for v in slots]),
    )
    local = execution._local_outputs(strategy, outputs, loop(split, 1), gathered=False)
    np.testing.assert_array_equal(local[0].numpy(), np.arange(16))
    np.testing.assert_array_equal(local[1].numpy(), np.arange(16) * 10)


def test_iterators_are_tagged_with_how_their_input_was_split(mirrored_strategy):
    strategy = mirrored_strategy(2)
    dataset = tf.data.Dataset.range(8).batch(4)
    split = strategy.experimental_distribute_dataset(dataset)
    per_host = strategy.distribute_datasets_from_function(lambda c: dataset)
    assert predict_order.input_kind(predict_order.tag_input(iter(split), split)) == SPLIT
    assert predict_order.input_kind(predict_order.tag_input(iter(per_host), per_host)) == (
        PER_PIPELINE
    )
    assert predict_order.input_kind(iter(split)) == SPLIT  # untagged: TensorFlow's default


# -- end to end: logical CPUs --------------------------------------------------------

N, D, BATCH = 37, 5, 8


def _features():
    return (np.arange(N * D, dtype="float32").reshape(N, D) / (N * D)) - 0.5


def _model(strategy, **kwargs):
    with strategy.scope():
        keras.utils.set_random_seed(11)
        net = keras.Sequential([keras.Input((D,)), keras.layers.Dense(3), keras.layers.Dense(2)])
        model = tfk.Model(net, **kwargs)
        model.compile(steps_per_execution=2)
    return model


def _inputs(x):
    def generator():
        for start in range(0, N, BATCH):
            yield (x[start : start + BATCH],)

    def dataset_fn(context):
        per_replica = context.get_per_replica_batch_size(BATCH)
        return tf.data.Dataset.from_tensor_slices(x).batch(per_replica)

    return {
        "arrays": lambda: {"x": x, "batch_size": BATCH},
        "dataset": lambda: {"x": tf.data.Dataset.from_tensor_slices(x).batch(BATCH)},
        "generator": lambda: {"x": generator()},
        "function": lambda: {"x": tfk.DatasetFunction(dataset_fn)},
    }


@pytest.mark.parametrize("replicas", [2, 4])
@pytest.mark.parametrize("static_shapes", [False, True])
def test_mirrored_predict_is_in_input_order_for_every_input_kind(
    mirrored_strategy, replicas, static_shapes
):
    x = _features()
    reference = _model(tf.distribute.get_strategy()).predict(x, batch_size=BATCH, verbose=0)
    model = _model(mirrored_strategy(replicas), static_shapes=static_shapes)
    for kind, make in _inputs(x).items():
        if static_shapes and kind == "function":
            continue  # a dataset function's per-replica batches are not padded to a global size
        got = model.predict(**make(), verbose=0)
        assert got.shape == reference.shape, kind
        np.testing.assert_allclose(got, reference, rtol=RTOL, atol=ATOL, err_msg=kind)


# -- end to end: a two-worker loopback cluster ------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(500)
@pytest.mark.parametrize("replicas_per_worker", [1, 2])
def test_two_worker_cluster_predicts_in_input_order(tmp_path, replicas_per_worker):
    """Every input kind, 100 rows in batches of 16 (a partial last batch); with two
    replicas per worker (2 x 2) the split input is the interleaved layout of the issue."""
    cluster_helpers.run(
        WORKER, [str(tmp_path), "predict", str(replicas_per_worker)], tmp_path, timeout=450
    )
    for index in range(2):
        result = np.load(tmp_path / f"predict_{index}.npz")
        expected = result["x"] @ result["weight_0"] + result["weight_1"]
        for kind in ("arrays", "dataset", "generator", "function"):
            np.testing.assert_allclose(
                result[kind], expected, rtol=RTOL, atol=ATOL, err_msg=f"worker {index}: {kind}"
            )
