"""Which global rows each replica holds, and the order that puts predictions back in input order.

A predict step runs on every replica; its outputs come back one tensor per
replica, in the strategy's replica order: `experimental_local_results` on one
client (a single host, a TPU pod's one client, an in-graph multi-host
`MirroredStrategy`), an all-gather over the global replica ids across
`MultiWorkerMirroredStrategy` workers. Both orders are input worker (host)
major: slot `w * R + r` is replica `r` of input worker `w`, with `W` input
workers of `R` replicas each. Which rows a slot holds depends on how the
input reached the replicas:

- `SPLIT` (`strategy.experimental_distribute_dataset`: arrays on one host or
  on a TPU, user `tf.data` datasets, generators). Each global batch is cut
  into `W * R` consecutive pieces (the last partial batch too: smaller or
  empty pieces), and input worker `w` keeps pieces `w, w + W, w + 2W, ...`
  (data auto-sharding of the rebatched dataset, and TPUStrategy's host
  split, measured in tests/test_predict_order.py). Replica `r` of worker `w`
  thus holds piece `r * W + w`: with 2 workers x 2 replicas, slots
  0, 1, 2, 3 hold rows [0, 1], [4, 5], [2, 3], [6, 7] of a batch of 8. This
  is the rule of tf-keras's `_tpu_multi_host_concat` and
  `_multi_worker_concat`.
- `PER_PIPELINE` (`strategy.distribute_datasets_from_function`: a
  `tfk.DatasetFunction`, and arrays read per host under several workers).
  Each input pipeline yields its replicas' batches in turn, so slot order is
  input order: for arrays, replica `r` of host `w` gets rows
  `[(w * R + r) * b, (w * R + r + 1) * b)` (data/adapters.py); for a dataset
  function, host `w`'s rows come after host `w - 1`'s in each step (hosts
  read their own shards: there is no single order across them).

With one input worker (any single-host strategy) both layouts are the
identity, and the predict loop concatenates with no reordering at all.

File-sharded user datasets under several workers (auto-shard policy FILE)
give each worker its own files: they have no order across workers, and are
returned as `SPLIT` orders them, as tf-keras does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from tfk_trainer import compat, distribute

SPLIT = "split"
PER_PIPELINE = "per_pipeline"
KINDS = (SPLIT, PER_PIPELINE)

_KIND_ATTRIBUTE = "_tfk_input_kind"


def piece_holders(
    num_input_workers: int, replicas_per_worker: int, kind: str
) -> list[tuple[int, int]]:
    """`(input worker, local replica)` holding each piece of a step's input, in input order.

    Args:
        num_input_workers: `W`, the input workers (hosts, or worker processes).
        replicas_per_worker: `R`, the replicas each input worker feeds.
        kind: `SPLIT` or `PER_PIPELINE` (see the module docstring).
    """
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}; received {kind!r}.")
    for name, value in (
        ("num_input_workers", num_input_workers),
        ("replicas_per_worker", replicas_per_worker),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int; received {value!r}.")
    w_count, r_count = num_input_workers, replicas_per_worker
    pieces = range(w_count * r_count)
    if kind == SPLIT:
        return [(k % w_count, k // w_count) for k in pieces]
    return [(k // r_count, k % r_count) for k in pieces]


def slot_order(num_input_workers: int, replicas_per_worker: int, kind: str) -> tuple[int, ...]:
    """The slot (`w * R + r`) holding each piece, in input order: concatenating the
    per-replica outputs in this order gives the rows in input order."""
    return tuple(
        w * replicas_per_worker + r
        for w, r in piece_holders(num_input_workers, replicas_per_worker, kind)
    )


def _host_key(device: str) -> tuple[int, str, int, int]:
    """Sorts hosts as TensorFlow numbers input workers: chief first, then workers by task."""
    spec = tf.DeviceSpec.from_string(device)
    job = spec.job or "localhost"
    rank = {"chief": 0, "worker": 1}.get(job, 2)
    return (rank, job, spec.replica or 0, spec.task or 0)


def replica_layout(strategy: Any) -> tuple[int, int, tuple[int, ...]]:
    """`(W, R, position)`: the strategy's input workers, replicas per worker, and where
    slot `w * R + r` sits in the list the predict loop concatenates.

    That list is this client's `experimental_local_results` (its
    `distribute.replica_devices` order), or under several worker processes the
    all-gather over global replica ids (process-major, each process's devices
    in order). Input workers are the hosts among this client's devices (a TPU
    pod's hosts, an in-graph multi-host `MirroredStrategy`'s tasks) times the
    worker processes (replicas in sync / this client's replica devices).
    """
    replicas = distribute.num_replicas(strategy)
    devices = distribute.replica_devices(strategy)  # () for the default strategy
    if not devices:
        return 1, replicas, tuple(range(replicas))
    hosts = sorted({_host_key(d) for d in devices})
    local: dict[tuple, list[int]] = {h: [] for h in hosts}
    for i, d in enumerate(devices):
        local[_host_key(d)].append(i)
    if len({len(v) for v in local.values()}) != 1 or replicas % len(devices):
        raise ValueError(
            "predict needs the same number of replicas on every input worker; the strategy has "
            f"{replicas} replicas over the devices {list(devices)}."
        )
    processes = replicas // len(devices)
    per_worker = len(devices) // len(hosts)
    position = [0] * replicas
    for p in range(processes):
        for h, host in enumerate(hosts):
            for r, i in enumerate(local[host]):
                position[(p * len(hosts) + h) * per_worker + r] = p * len(devices) + i
    return processes * len(hosts), per_worker, tuple(position)


def output_order(strategy: Any, kind: str) -> tuple[int, ...]:
    """Indices into the list of per-replica outputs (local results, or the
    all-gathered replicas) that concatenate to input order; the function the
    predict loop calls. `strategy` needs only its replica count and the
    devices `distribute.replica_devices` reads, so a TPU pod or a multi-GPU
    worker is tested with a stand-in that describes its devices."""
    workers, per_worker, position = replica_layout(strategy)
    return tuple(position[slot] for slot in slot_order(workers, per_worker, kind))


def is_identity(order: Sequence[int]) -> bool:
    return tuple(order) == tuple(range(len(order)))


def concat_in_order(values: Sequence[tf.Tensor], order: Sequence[int]) -> tf.Tensor:
    """Per-replica tensors (one per slot) concatenated along the batch in `order`."""
    return tf.concat([values[i] for i in order], axis=0)


def reorder_rows(gathered: tf.Tensor, sizes: tf.Tensor, order: Sequence[int]) -> tf.Tensor:
    """All-gathered rows (replica after replica, `sizes[i]` rows from replica `i`)
    with the replicas' row blocks put in `order`. Blocks may differ in size (a
    last partial batch), or be empty."""
    if is_identity(order):
        return gathered
    blocks = tf.RaggedTensor.from_row_lengths(gathered, tf.cast(sizes, tf.int64))
    return tf.gather(blocks, list(order)).flat_values


def tag_input(iterator: Any, distributed: Any) -> Any:
    """Records on `iterator` how its `distributed` dataset splits the input
    (`PER_PIPELINE` for `distribute_datasets_from_function`, else `SPLIT`),
    for the predict loop to read; returns the iterator."""
    kind = PER_PIPELINE if compat.is_dataset_from_function(distributed) else SPLIT
    try:
        setattr(iterator, _KIND_ATTRIBUTE, kind)
    except AttributeError:  # an iterator that takes no attributes: the default applies
        pass
    return iterator


def input_kind(iterator: Any) -> str:
    """How `iterator`'s input was split: as tagged by `tag_input`; `SPLIT`
    (`experimental_distribute_dataset`, TensorFlow's default) when untagged."""
    return getattr(iterator, _KIND_ATTRIBUTE, SPLIT)
