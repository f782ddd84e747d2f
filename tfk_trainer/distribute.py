"""Strategy resolution: one name per way of running, tf.distribute underneath.

    strategy = tfk.distribute.resolve("mirrored")        # every local GPU (or CPU)
    strategy = tfk.distribute.resolve("tpu", tpu="local")  # on a Cloud TPU VM
    with strategy.scope():
        model = tfk.Model(make_network()); model.compile(...)

Names: "default"/"off", "one_device", "mirrored", "multi_worker_mirrored",
"tpu" and "auto". Every failure is a `ValueError` or `RuntimeError` that
says what was tried and what to do, raised in seconds: in particular, a TPU
address that does not answer is probed with a short TCP connect before
`experimental_connect_to_cluster` is called, since that call hangs forever
on a dead address.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import socket
from collections.abc import Callable, Sequence
from urllib.parse import urlparse

import tensorflow as tf

from tfk_trainer import compat

log = logging.getLogger("tfk_trainer")

NAMES = ("default", "off", "one_device", "mirrored", "multi_worker_mirrored", "tpu", "auto")
_COMMUNICATION = {
    "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
    "ring": tf.distribute.experimental.CommunicationImplementation.RING,
    "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
}


def resolve(
    name: str,
    *,
    tpu: str | None = None,
    devices: Sequence[str] | None = None,
    communication: str = "auto",
    tpu_zone: str | None = None,
    tpu_project: str | None = None,
    connect_timeout: float = 10.0,
) -> tf.distribute.Strategy:
    """Returns the `tf.distribute.Strategy` for `name`.

    Args:
        name: one of "default" (or "off"), "one_device", "mirrored",
            "multi_worker_mirrored", "tpu", "auto".
        tpu: for "tpu": "local" on a TPU VM, a TPU name (Cloud TPU Node,
            needs the `tpu` extra, cloud-tpu-client), or a "grpc://host:port"
            address. Defaults to "local".
        devices: for "mirrored" (a list of devices) or "one_device" (one).
        communication: for "multi_worker_mirrored": "auto", "ring" or "nccl".
        tpu_zone: for TPU names resolved through the Cloud API: the zone.
        tpu_project: for TPU names resolved through the Cloud API: the project.
        connect_timeout: seconds to wait for a remote TPU address to answer.

    Returns:
        The strategy: build and compile the model under its `scope()`.
    """
    if not isinstance(name, str) or name.lower() not in NAMES:
        raise ValueError(f"Unknown strategy {name!r}; accepted: {list(NAMES)}.")
    name = name.lower()
    if name in ("default", "off"):
        return tf.distribute.get_strategy()
    if name == "one_device":
        if devices is not None and (isinstance(devices, str) or len(devices) != 1):
            device = devices if isinstance(devices, str) else None
            if device is None:
                raise ValueError(
                    f"`devices` for 'one_device' must name one device; received {devices!r}."
                )
        else:
            device = devices[0] if devices else _default_device()
        return tf.distribute.OneDeviceStrategy(device)
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(list(devices) if devices else None)
    if name == "multi_worker_mirrored":
        return _multi_worker(communication)
    if name == "tpu":
        return _tpu(tpu or "local", tpu_zone, tpu_project, connect_timeout)
    return _auto(tpu_zone, tpu_project, connect_timeout)


def _default_device() -> str:
    return "/gpu:0" if tf.config.list_physical_devices("GPU") else "/cpu:0"


def _multi_worker(communication: str) -> tf.distribute.Strategy:
    if communication not in _COMMUNICATION:
        raise ValueError(
            f"`communication` must be one of {sorted(_COMMUNICATION)}; received {communication!r}."
        )
    raw = os.environ.get("TF_CONFIG")
    if raw:
        try:
            config = json.loads(raw)
            config["cluster"]["worker"]  # noqa: B018 - presence check
            config["task"]["index"]  # noqa: B018
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                "TF_CONFIG is set but is not a valid cluster description "
                '(expected {"cluster": {"worker": [...]}, "task": {"type": "worker", "index": i}}): '
                f"{e}"
            ) from e
    else:
        log.warning(
            "multi_worker_mirrored without TF_CONFIG: running as a single worker. Set TF_CONFIG "
            "on every worker to train across machines."
        )
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=_COMMUNICATION[communication]
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def tpu_attached() -> bool:
    """True when this host has TPU devices (a TPU VM) or TF already sees them."""
    if tf.config.list_logical_devices("TPU"):
        return True
    return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


def _auto(zone, project, timeout) -> tf.distribute.Strategy:
    if tpu_attached():
        return _tpu("local", zone, project, timeout)
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def check_reachable(address: str, timeout: float) -> None:
    """Fails fast if nothing listens at a grpc:// TPU address (connecting would hang).

    Args:
        address: A "grpc://host:port" address (port 8470 when omitted).
        timeout: Seconds to wait for a connection.

    Raises:
        RuntimeError: Nothing answered within `timeout`.
    """
    parsed = urlparse(address)
    host, port = parsed.hostname, parsed.port or 8470
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as e:
        raise RuntimeError(
            f"No TPU answers at {address} ({type(e).__name__}: {e}) within {timeout:g} s. Check "
            "the address and that the TPU is running, or use tpu='local' on a TPU VM."
        ) from e


# Set on every host of a Cloud TPU VM slice by its runtime (libtpu reads them too):
# the slice's host names, this host's index, and the accelerator type.
_TPU_HOSTNAMES_ENV = "TPU_WORKER_HOSTNAMES"
_TPU_WORKER_ID_ENV = "TPU_WORKER_ID"
_TPU_TYPE_ENV = "TPU_ACCELERATOR_TYPE"


_METADATA_ENDPOINTS = (
    "http://metadata.google.internal/computeMetadata/v1/instance/attributes/"
    "worker-network-endpoints"
)


def _tpu_vm_endpoints(timeout: float = 2.0) -> str | None:
    """The TPU VM's `worker-network-endpoints` metadata (one entry per host of the
    slice), or None where there is no metadata server (not a Cloud TPU VM)."""
    import urllib.request

    request = urllib.request.Request(_METADATA_ENDPOINTS, headers={"Metadata-Flavor": "Google"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.read().decode("utf-8", errors="replace")
    except Exception:  # noqa: BLE001 - no metadata server, no attribute: unknown
        return None


def tpu_slice_hosts(environ: dict | None = None, metadata: str | None = None) -> int:
    """How many hosts the TPU VM slice this process runs on has (1 when nothing
    says otherwise).

    `TPUClusterResolver("local")` counts only this host's chips
    (`num_accelerators()` lists the local TPU devices), so a multi-host slice
    cannot be recognised from the resolver; the TPU VM runtime's environment
    (`TPU_WORKER_HOSTNAMES`, `TPU_WORKER_ID`) or its metadata
    (`worker-network-endpoints`, one comma-separated entry per host) says it.

    Args:
        environ: The environment to read; `None`: `os.environ`.
        metadata: The `worker-network-endpoints` metadata value, if known.
    """
    environ = os.environ if environ is None else environ
    names = [h for h in environ.get(_TPU_HOSTNAMES_ENV, "").split(",") if h.strip()]
    worker_id = environ.get(_TPU_WORKER_ID_ENV, "").strip()
    hosts = len(names)
    if worker_id.isdigit():
        hosts = max(hosts, int(worker_id) + 1)
    if metadata:
        hosts = max(hosts, len([e for e in metadata.split(",") if e.strip()]))
    return max(hosts, 1)


def check_local_tpu(environ: dict | None = None, metadata: str | None = None) -> None:
    """Refuses `tpu="local"` on a multi-host slice (a pod slice such as v4-32).

    TPUStrategy has a single client. With "local" on a multi-host slice each
    host would train alone on its own chips: N independent runs writing the
    same model directory, not one run on the slice.

    Args:
        environ: The environment to read; `None`: `os.environ`.
        metadata: The `worker-network-endpoints` metadata value, if known.

    Raises:
        RuntimeError: The slice has several hosts.
    """
    environ = os.environ if environ is None else environ
    hosts = tpu_slice_hosts(environ, metadata)
    if hosts <= 1:
        return
    kind = environ.get(_TPU_TYPE_ENV, "").strip() or "this TPU slice"
    raise RuntimeError(
        f"tpu='local' cannot train on a multi-host TPU slice ({kind} has {hosts} hosts, "
        f"{_TPU_HOSTNAMES_ENV}={environ.get(_TPU_HOSTNAMES_ENV, '')!r}): TPUClusterResolver('local') "
        "sees only this host's chips. Run ONE client process with the TPU's name, "
        "e.g. --strategy=tpu --tpu=NAME (tfk.distribute.resolve('tpu', tpu='NAME', "
        "tpu_zone=..., tpu_project=...)); the slice's hosts serve as its input workers. "
        "See docs/distributed.md, 'A TPU pod slice'."
    )


def _tpu(tpu: str, zone, project, timeout) -> tf.distribute.Strategy:
    resolver_cls = tf.distribute.cluster_resolver.TPUClusterResolver
    try:
        if tpu == "local":
            # The environment first; the metadata server only on a TPU VM whose
            # environment does not already say it is a multi-host slice.
            check_local_tpu()
            if tpu_attached():
                check_local_tpu(metadata=_tpu_vm_endpoints())
            resolver = resolver_cls(tpu="local")
        else:
            if tpu.startswith("grpc://"):
                check_reachable(tpu, timeout)
            resolver = resolver_cls(tpu=tpu, zone=zone, project=project)
    except (ValueError, RuntimeError) as e:
        if "Missing runtime dependency" in str(e):
            raise RuntimeError(
                f"Resolving the TPU name {tpu!r} needs the Cloud TPU client: "
                "pip install 'tfk_trainer[tpu]' (cloud-tpu-client). On a TPU VM use tpu='local'."
            ) from e
        if isinstance(e, RuntimeError) and (
            "No TPU answers" in str(e) or "multi-host TPU slice" in str(e)
        ):
            raise
        raise RuntimeError(f"Could not resolve the TPU {tpu!r}: {e}") from e
    except Exception as e:  # noqa: BLE001 - URLError, DefaultCredentialsError, ...
        raise RuntimeError(
            f"Could not resolve the TPU {tpu!r}: {type(e).__name__}: {e}. For a TPU name, "
            "pass tpu_zone and tpu_project and make sure Google Cloud credentials are set; "
            "on a TPU VM use tpu='local'."
        ) from e
    if tpu != "local":
        tf.config.experimental_connect_to_cluster(resolver)
    try:
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError, ValueError) as e:
        raise RuntimeError(
            f"No TPU found for tpu={tpu!r}: {str(e).splitlines()[0][:200]}. Run on a Cloud TPU "
            "VM (tpu='local') or pass a TPU name/grpc:// address; off TPUs use 'auto', "
            "'mirrored' or 'default'."
        ) from e
    return tf.distribute.TPUStrategy(resolver)


# -- predicates: the one place that says what a strategy is ----------------------
#
# Every module asks these instead of inspecting a strategy itself, so that one
# fact (is this TPU? several workers? CPU replicas?) has one rule.


def _in_scope(strategy: tf.distribute.Strategy | None) -> tf.distribute.Strategy:
    return strategy or tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True on the one worker that writes checkpoints, logs and exports.

    Args:
        strategy: The strategy to ask; `None`: the one in scope.
    """
    strategy = _in_scope(strategy)
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    cluster = resolver.cluster_spec().as_dict() if resolver.cluster_spec() else {}
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def is_multi_worker(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True under a strategy that spans several workers (hosts).

    Then reading logs, saving and predicting are collectives every worker must
    join, and each worker reads its own shard of the data, so shards may hold
    different numbers of batches. A `MultiWorkerMirroredStrategy` running as a
    single worker (no TF_CONFIG) is not multi-worker: it runs like
    `MirroredStrategy` on that host.

    Args:
        strategy: The strategy to ask; `None`: the one in scope.
    """
    strategy = _in_scope(strategy)
    return compat.in_multi_worker_mode(strategy)


def is_tpu(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True under a TPU strategy (`TPUStrategy`, and TF's experimental one).

    Args:
        strategy: The strategy to ask; `None`: the one in scope.
    """
    return type(_in_scope(strategy)).__name__.startswith("TPUStrategy")


def num_replicas(strategy: tf.distribute.Strategy | None = None) -> int:
    """How many replicas run each step in sync (over all workers).

    Args:
        strategy: The strategy to ask; `None`: the one in scope.
    """
    return int(_in_scope(strategy).num_replicas_in_sync)


def is_multi_replica(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True when a step runs on more than one replica, here or across workers.

    Args:
        strategy: The strategy to ask; `None`: the one in scope.
    """
    return num_replicas(strategy) > 1 or is_multi_worker(strategy)


def replica_devices(strategy: tf.distribute.Strategy | None = None) -> tuple[str, ...]:
    """The devices this worker's replicas run on; `()` for the default strategy.

    Args:
        strategy: The strategy to ask; `None`: the one in scope.
    """
    try:
        return tuple(_in_scope(strategy).extended.worker_devices)
    except (RuntimeError, AttributeError):  # the default strategy has none
        return ()


def cpu_replicas(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True when every replica of this worker runs on a CPU device (also when the
    strategy names no device, as the default strategy does).

    Args:
        strategy: The strategy to ask; `None`: the one in scope.
    """
    return all("CPU" in d.upper() for d in replica_devices(strategy))


def device_kind(device: str) -> str:
    """ "GPU", "TPU", "CPU" (or another type) from a device string such as
    "/job:worker/replica:0/task:1/device:GPU:0" or "/gpu:0"."""
    last = device.rstrip("/").split("/")[-1]
    if last.lower().startswith("device:"):
        last = last[len("device:") :]
    return last.split(":")[0].upper()


def xla_replica_devices(devices: Sequence[str]) -> bool:
    """True when a multi-replica step on `devices` can be XLA-compiled: every
    one is a GPU (or TPU). XLA cannot reach replica variables on other
    logical CPU devices, so CPU replicas (and mixed CPU/GPU lists) stay off.

    Args:
        devices: This worker's replica devices (`replica_devices`).
    """
    return bool(devices) and all(device_kind(d) in ("GPU", "TPU") for d in devices)


def xla_replicas(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True when `jit_compile="auto"` compiles a multi-replica step with XLA:
    TPU strategies, and Mirrored/MultiWorkerMirrored over GPUs (as Keras 3
    compiles them); not on CPU replicas.

    Args:
        strategy: The strategy to ask; `None`: the one in scope.
    """
    strategy = _in_scope(strategy)
    return is_tpu(strategy) or xla_replica_devices(replica_devices(strategy))


def broadcast_from_chief(value: int, strategy: tf.distribute.Strategy | None = None) -> int:
    """The chief's `value` on every worker (`value` itself off multi-worker).

    A collective: every worker must call it at the same point, each with its
    own value; the chief's (the worker holding replica 0) is returned. Used
    where workers decide from their own measurements but must act the same
    (`steps_per_execution="auto"`).

    Args:
        value: This worker's value (a non-negative int below 2**24).
        strategy: The strategy to ask; `None`: the one in scope.
    """
    strategy = _in_scope(strategy)
    if not is_multi_worker(strategy):
        return int(value)
    mine = tf.constant(float(value), tf.float32)

    @tf.function(autograph=False)
    def broadcast() -> tf.Tensor:
        def replica() -> tf.Tensor:
            ctx = tf.distribute.get_replica_context()
            first = tf.equal(ctx.replica_id_in_sync_group, 0)
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.where(first, mine, 0.0))

        return strategy.run(replica)

    with strategy.scope():
        out = strategy.experimental_local_results(broadcast())[0]
    return int(round(float(out)))


def chief_decides(
    strategy: tf.distribute.Strategy | None = None,
) -> Callable[[int], int] | None:
    """`broadcast_from_chief` bound to `strategy` under multi-worker, else None
    (each process decides alone).

    Args:
        strategy: The strategy to ask; `None`: the one in scope.
    """
    strategy = _in_scope(strategy)
    if not is_multi_worker(strategy):
        return None
    return lambda value: broadcast_from_chief(value, strategy)


# Paths a remote TPU host cannot see: they are on (or in the memory of) the client.
_CLIENT_LOCAL_SCHEMES = ("", "file", "ram")
_CLIENT_IO_DEVICE = "/job:localhost"


def remote_tpu(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True under a TPUStrategy whose TPU is another machine (a TPU name or a
    grpc:// address, as on a pod slice's client), not this host's chips.

    Args:
        strategy: The strategy to ask; `None`: the one in scope.
    """
    strategy = _in_scope(strategy)
    if not is_tpu(strategy):
        return False
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return False
    try:
        return bool(resolver.master())
    except (ValueError, RuntimeError):
        return True  # a named TPU whose address cannot be listed now: still not local


def client_local_path(path: str) -> bool:
    """True for a path only this process's machine can read: a local path,
    file:// or ram:// (gs:// and other remote file systems are not).

    Args:
        path: A file or directory path.
    """
    scheme = urlparse(str(path)).scheme if "://" in str(path) else ""
    return scheme.lower() in _CLIENT_LOCAL_SCHEMES


def io_device(strategy: tf.distribute.Strategy | None, path: str) -> str | None:
    """The device that must read and write `path`: "/job:localhost" (this
    client) for a local path under a remote TPU, whose hosts would otherwise
    open the path on their own disks; None (TensorFlow's choice) otherwise.

    Args:
        strategy: The strategy to ask; `None`: the one in scope.
        path: The checkpoint prefix or SavedModel directory.
    """
    if remote_tpu(strategy) and client_local_path(path):
        return _CLIENT_IO_DEVICE
    return None


def checkpoint_options(
    strategy: tf.distribute.Strategy | None, path: str
) -> tf.train.CheckpointOptions:
    """`tf.train.CheckpointOptions` for writing or reading `path` under `strategy`
    (`experimental_io_device` set where `io_device` says so).

    Args:
        strategy: The strategy to ask; `None`: the one in scope.
        path: The checkpoint prefix or directory.
    """
    return tf.train.CheckpointOptions(experimental_io_device=io_device(strategy, path))


def saved_model_save_options(
    strategy: tf.distribute.Strategy | None, path: str
) -> tf.saved_model.SaveOptions:
    """`tf.saved_model.SaveOptions` for exporting to `path` under `strategy`.

    Args:
        strategy: The strategy to ask; `None`: the one in scope.
        path: The SavedModel directory.
    """
    return tf.saved_model.SaveOptions(experimental_io_device=io_device(strategy, path))


def saved_model_load_options(
    strategy: tf.distribute.Strategy | None, path: str
) -> tf.saved_model.LoadOptions:
    """`tf.saved_model.LoadOptions` for loading `path` under `strategy`.

    Args:
        strategy: The strategy to ask; `None`: the one in scope.
        path: The SavedModel directory.
    """
    return tf.saved_model.LoadOptions(experimental_io_device=io_device(strategy, path))


def per_host_input(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True when each worker (host) should build its own input pipeline.

    Under several workers, `experimental_distribute_dataset` builds the whole
    pipeline once and rewrites it per worker (serialising it), and every
    worker reads the whole data to keep its share; a per-host pipeline
    (`distribute_datasets_from_function`) reads only the host's own rows.
    TPU strategies keep the one-pipeline path: their input workers may be
    remote hosts, where Python-held arrays cannot be read.

    Args:
        strategy: The strategy to ask; `None`: the one in scope.
    """
    strategy = _in_scope(strategy)
    return is_multi_worker(strategy) and not is_tpu(strategy)
