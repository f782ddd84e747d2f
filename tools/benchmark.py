"""Throughput benchmark: tfk_trainer against `keras.Model.fit` and a hand-written loop.

The same network is trained (or evaluated, or run for predictions) on the same
data by three runners, in one process, interleaved:

- `tfk`: `tfk.Model(net)` with `compile`/`fit`/`evaluate`/`predict`;
- `keras`: the same architecture as a `keras.Model`, through Keras's own
  `fit`/`evaluate`/`predict`;
- `ref`: a hand-written reference, the practical limit: one `tf.function`
  looping `for _ in tf.range(n)` over a tf.data iterator, doing the forward
  pass, the loss, the gradients and the optimizer update (same optimizer class
  and loss) and nothing else; for evaluate, the forward pass and a loss sum;
  for predict, the forward pass into a TensorArray. It is called once per
  `steps_per_execution` steps (`n = spe`), the same granularity as the two
  engines, so `tfk/ref` is the engine's overhead at that spe.

All three get the same data and the same work: `shuffle=False` for arrays (the
reference batches them with `from_tensor_slices(...).batch()`), the same
repeated tf.data pipeline, the same generator, and for PyDatasets a
`tfk.data.PyDataset(workers=2)` / `keras.utils.PyDataset(workers=2)` (the
reference reads the same batches through `from_generator`, in one thread).
Loss: `SparseCategoricalCrossentropy(from_logits=True)`, optimizer: `Adam`,
no metrics.

Every measurement (one row of the table) builds the three runners, makes one
1-step call each (timed: tracing and compilation included; "first-step s" is
that call minus the next one), a second 1-step call (warm), and then `--rounds`
rounds of one timed call of N steps per runner, with the runners' order rotated
each round (A B C, B C A, C A B, ...). Ratios are taken within a round and
reported as medians over rounds, so a noisy neighbour slows all three runners
of a round rather than one ratio. The same ratios are also taken in process
CPU time (all threads) per call: on a shared, saturated machine, CPU time is
far less sensitive to the neighbours than wall time (but it charges an engine
for background threads, e.g. tf.data's, that an idle machine would hide).
N is rounded up to a multiple of steps_per_execution (Keras runs whole
executions on repeated data). Every fit call is checked to have run exactly N optimizer steps (`optimizer.iterations`),
and every predict call to have returned N batches of rows.

Watched-batch rows (`watch=on`, `--watch`): tfk and Keras get a callback that
overrides the batch-end hooks (and only counts), as any per-batch callback does.
tfk then cannot fold executions: it returns to Python after every execution of
`spe` steps and calls the hook, as Keras does, so `tfk/ref` on these rows is the
engine's per-execution cost (the driver's loop in Python, the hooks, the compiled
step's extra work) against the reference loop, which calls no callback. tfk is
checked to have called the hook exactly once per execution.

Peak memory is measured per runner, each alone in a fresh subprocess: after the
imports and the data, the process's peak RSS is reset (`/proc/self/clear_refs`)
and the high-water mark of the runner's build, two 1-step calls and one timed
call is reported (absolute MB; a baseline process that builds only the data
gives the floor). Where the reset is unavailable, the process peak
(`getrusage`) is reported, TensorFlow's import included.

Cold start (`--cold`, run alone): a newcomer's first `fit()` in a fresh
process. For each case, each runner (`tfk`, `keras`; same network, same data,
same compile arguments) runs in its own fresh interpreter (`python -c`), which
records, from the moment the parent spawned it (so interpreter start and
`import tensorflow` are included): the imports done, the end of the first
optimizer step (a callback's `on_train_batch_end` for batch 0) and the end of
`fit()`, in wall clock and in process CPU time. Rounds alternate the runners'
order; medians and per-round ratios are reported. The networks are defined
again in the child script, so a child imports nothing but NumPy, TensorFlow,
Keras and (for `tfk`) tfk_trainer, which is byte-compiled first (as `pip
install` does). `--cold_compare=DIR` adds a third runner, `base`: tfk_trainer
imported from another checkout (an older commit), interleaved in the same
rounds, for before/after tables on a noisy machine.

Usage:
  .venv/bin/python tools/benchmark.py --quick
  .venv/bin/python tools/benchmark.py --quick --watch=on --memory=none
  .venv/bin/python tools/benchmark.py --cold --cold_rounds=5
  git worktree add /tmp/before HEAD~3
  .venv/bin/python tools/benchmark.py --cold --cold_compare=/tmp/before
  .venv/bin/python tools/benchmark.py --rounds=7 --output=/tmp/bench.md
  .venv/bin/python tools/benchmark.py --workloads=tiny_mlp --inputs=numpy \\
      --spe=1,16,128 --modes=fit,predict --product
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import dataclasses  # noqa: E402
import gc  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from absl import app, flags  # noqa: E402

WORKLOAD_NAMES = ("tiny_mlp", "fashion_mlp", "cnn", "transformer")
INPUT_NAMES = ("numpy", "tfdata", "generator", "pydataset")
MODE_NAMES = ("fit", "evaluate", "predict")
STRATEGY_NAMES = ("default", "mirrored")
JIT_NAMES = ("off", "on")
WATCH_NAMES = ("off", "on")
RUNNERS = ("tfk", "keras", "ref")

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "Run the small matrix (a few minutes on 2 cores).")
flags.DEFINE_bool(
    "gpu",
    False,
    "Run the GPU matrix (fit/evaluate/predict, default and MirroredStrategy over every GPU, "
    "jit off and on); fails with a clear message when no GPU is visible.",
)
flags.DEFINE_list("workloads", None, f"Only these workloads, from {WORKLOAD_NAMES}.")
flags.DEFINE_list("inputs", None, f"Only these input kinds, from {INPUT_NAMES}.")
flags.DEFINE_list("spe", None, "Only these steps_per_execution values (ints).")
flags.DEFINE_list("modes", None, f"Only these modes, from {MODE_NAMES}.")
flags.DEFINE_list("strategies", None, f"Only these strategies, from {STRATEGY_NAMES}.")
flags.DEFINE_list("jit", None, f"Only these jit_compile settings, from {JIT_NAMES}.")
flags.DEFINE_list(
    "watch",
    None,
    f"Only these batch-watching settings, from {WATCH_NAMES}: `on` rows pass tfk and Keras a "
    "callback that overrides the batch-end hook (so tfk cannot fold executions: every "
    "execution returns to Python and calls the hook); with --product, `off` unless given.",
)
flags.DEFINE_bool(
    "product",
    False,
    "Measure the full cartesian product of --workloads/--inputs/--spe/--modes/--strategies/"
    "--jit (all values of a flag left unset) instead of the curated matrix.",
)
flags.DEFINE_integer("rounds", None, "Timed rounds per measurement (default 3 quick, 5 otherwise).")
flags.DEFINE_integer(
    "steps",
    None,
    "Timed steps per call (rounded up to a multiple of steps_per_execution); default per workload.",
)
flags.DEFINE_enum(
    "memory",
    None,
    ["none", "one", "basic", "all"],
    "Per-runner peak RSS, each runner alone in a fresh subprocess: none; one (the first fit row "
    "per workload with NumPy input, the default strategy and jit off; the --quick default); "
    "basic (every row with NumPy input, the default strategy and jit off; the default); all.",
)
flags.DEFINE_string(
    "output", None, "Also write the results here: JSON if the name ends in .json, else markdown."
)
flags.DEFINE_string("memory_child", None, "Internal: run one runner of one row and print its RSS.")
flags.DEFINE_bool(
    "cold",
    False,
    "Run only the cold-start section: each runner's first fit() in a fresh interpreter, "
    "timed from the spawn to the first optimizer step and to the end of fit().",
)
flags.DEFINE_string(
    "cold_compare",
    None,
    "With --cold: also time tfk_trainer imported from this other checkout (e.g. a `git "
    "worktree` of an older commit), as a third runner `base`, interleaved in the same rounds.",
)
flags.DEFINE_list("cold_cases", None, "Only these cold-start cases (default: all of COLD_CASES).")
flags.DEFINE_integer(
    "cold_rounds", None, "Fresh processes per runner and case (default 3 with --quick, else 5)."
)
flags.DEFINE_float(
    "large_array_gb",
    0.0,
    "Run only the large-array row (never part of --quick): fit() on a NumPy array of this "
    "many GB (e.g. 2.2) in a fresh process; reports the peak RSS and the time to the first "
    "optimizer step, against a process that only builds the array.",
)


@dataclasses.dataclass(frozen=True)
class Config:
    workload: str
    input: str
    spe: int
    mode: str
    strategy: str = "default"
    jit: str = "off"
    watch: str = "off"  # "on": a callback watches every batch (no folded executions)
    steps: int | None = None  # timed steps; None: the workload's default

    def key(self) -> str:
        return (
            f"{self.workload}/{self.input}/spe={self.spe}/{self.mode}/{self.strategy}"
            f"/jit={self.jit}" + ("/watched" if self.watch == "on" else "")
        )


# -- the curated matrices ----------------------------------------------------------


def quick_matrix() -> list[Config]:
    c = Config
    return [
        c("tiny_mlp", "numpy", 1, "fit"),
        c("tiny_mlp", "numpy", 16, "fit"),
        c("tiny_mlp", "numpy", 128, "fit"),
        c("tiny_mlp", "numpy", 1, "evaluate"),
        c("tiny_mlp", "numpy", 1, "predict"),
        c("tiny_mlp", "tfdata", 1, "fit"),
        # Python sources and two replicas on two cores are slower per step: fewer steps.
        c("tiny_mlp", "generator", 16, "fit", steps=1024),
        c("tiny_mlp", "pydataset", 16, "fit", steps=1024),
        c("tiny_mlp", "numpy", 1, "fit", "mirrored", steps=192),
        c("tiny_mlp", "numpy", 16, "fit", "mirrored", steps=384),
        c("fashion_mlp", "numpy", 1, "fit"),
        c("fashion_mlp", "numpy", 16, "fit"),
        c("fashion_mlp", "numpy", 16, "fit", jit="on"),
        c("fashion_mlp", "numpy", 16, "predict"),
        c("cnn", "numpy", 16, "fit"),
        c("transformer", "numpy", 16, "fit"),
        *watched_rows(),
    ]


def watched_rows() -> list[Config]:
    """Fit with a callback that watches every batch: one execution of `spe` steps per
    call of the compiled function, each followed by the batch hooks, so these rows
    measure the engine's per-execution work in Python against the reference loop."""
    c = Config
    return [
        c("tiny_mlp", "numpy", 1, "fit", watch="on"),
        c("tiny_mlp", "numpy", 16, "fit", watch="on"),
        c("fashion_mlp", "numpy", 16, "fit", watch="on"),
    ]


def gpu_matrix() -> list[Config]:
    """The GPU rows: each workload's fit/evaluate/predict with NumPy input at spe=16, on
    one GPU and mirrored over every GPU, with XLA off and on (`jit_compile="auto"`
    compiles mirrored GPU steps, issue 18 item 6)."""
    rows = []
    for w in ("fashion_mlp", "cnn", "transformer"):
        for mode in MODE_NAMES:
            for strategy in STRATEGY_NAMES:
                for jit in JIT_NAMES:
                    rows.append(Config(w, "numpy", 16, mode, strategy, jit))
    return rows


def gpus_visible() -> bool:
    import tensorflow

    return bool(tensorflow.config.list_physical_devices("GPU"))


def standard_matrix() -> list[Config]:
    rows: list[Config] = []
    for w in WORKLOAD_NAMES:
        for spe in (1, 16, 128):
            rows.append(Config(w, "numpy", spe, "fit"))
        for mode in ("evaluate", "predict"):
            for spe in (1, 16):
                rows.append(Config(w, "numpy", spe, mode))
        for inp in ("tfdata", "generator", "pydataset"):
            python_source = inp in ("generator", "pydataset")
            steps = WORKLOADS[w].steps if python_source else None  # slower per step
            rows.append(Config(w, inp, 16, "fit", steps=steps))
        for spe in (1, 16):
            # Two replicas on two cores: several times slower per step.
            steps = WORKLOADS[w].steps // 4 * (WORKLOADS[w].many_factor if spe > 1 else 1)
            rows.append(Config(w, "numpy", spe, "fit", "mirrored", steps=steps))
            rows.append(Config(w, "numpy", spe, "fit", jit="on"))
    for inp in ("tfdata", "generator", "pydataset"):
        rows.append(Config("tiny_mlp", inp, 1, "fit", steps=WORKLOADS["tiny_mlp"].steps // 2))
    rows += watched_rows()
    rows += [Config("fashion_mlp", "numpy", 1, "fit", watch="on")]
    rows += [Config("tiny_mlp", "numpy", 1, m, watch="on") for m in ("evaluate", "predict")]
    return rows


def product_matrix() -> list[Config]:
    values = [
        FLAGS.workloads or WORKLOAD_NAMES,
        FLAGS.inputs or INPUT_NAMES,
        [int(s) for s in FLAGS.spe] if FLAGS.spe else (1, 16, 128),
        FLAGS.modes or MODE_NAMES,
        FLAGS.strategies or STRATEGY_NAMES,
        FLAGS.jit or JIT_NAMES,
        FLAGS.watch or ("off",),
    ]
    rows = [Config(*v) for v in itertools.product(*values)]
    if gpus_visible():
        return rows  # XLA compiles mirrored steps on GPUs
    return [r for r in rows if not (r.strategy == "mirrored" and r.jit == "on")]


def select_matrix() -> list[Config]:
    if FLAGS.product:
        rows = product_matrix()
    elif FLAGS.gpu:
        rows = gpu_matrix()
    else:
        rows = quick_matrix() if FLAGS.quick else standard_matrix()

    def keep(values: list[str] | None, value: Any) -> bool:
        return values is None or str(value) in values

    return [
        r
        for r in rows
        if keep(FLAGS.workloads, r.workload)
        and keep(FLAGS.inputs, r.input)
        and keep(FLAGS.spe, r.spe)
        and keep(FLAGS.modes, r.mode)
        and keep(FLAGS.strategies, r.strategy)
        and keep(FLAGS.jit, r.jit)
        and keep(FLAGS.watch, r.watch)
    ]


def check_flag_values() -> None:
    for name, allowed in [
        ("workloads", WORKLOAD_NAMES),
        ("inputs", INPUT_NAMES),
        ("modes", MODE_NAMES),
        ("strategies", STRATEGY_NAMES),
        ("jit", JIT_NAMES),
        ("watch", WATCH_NAMES),
    ]:
        for value in getattr(FLAGS, name) or []:
            if value not in allowed:
                raise app.UsageError(f"--{name}: unknown value {value!r}; choose from {allowed}.")
    for value in FLAGS.spe or []:
        if not value.isdigit() or int(value) < 1:
            raise app.UsageError(f"--spe: {value!r} is not a positive int.")
    for value in FLAGS.cold_cases or []:
        if value not in COLD_CASES:
            raise app.UsageError(
                f"--cold_cases: unknown value {value!r}; choose from {tuple(COLD_CASES)}."
            )
    if FLAGS.cold_rounds is not None and FLAGS.cold_rounds < 1:
        raise app.UsageError("--cold_rounds must be >= 1.")
    if FLAGS.rounds is not None and FLAGS.rounds < 1:
        raise app.UsageError("--rounds must be >= 1.")
    if FLAGS.steps is not None and FLAGS.steps < 1:
        raise app.UsageError("--steps must be >= 1.")


# -- TensorFlow setup (imported after the flags, before any op runs) ---------------

tf: Any = None
keras: Any = None
np: Any = None
tfk: Any = None


def import_tensorflow(logical_cpus: int) -> None:
    """Imports TF/Keras/tfk; with 2 logical CPUs configured first (MirroredStrategy rows)."""
    global tf, keras, np, tfk
    import numpy
    import tensorflow

    if logical_cpus > 1:
        cpus = tensorflow.config.list_physical_devices("CPU")
        tensorflow.config.set_logical_device_configuration(
            cpus[0], [tensorflow.config.LogicalDeviceConfiguration()] * logical_cpus
        )
    import keras as keras_mod

    import tfk_trainer

    tf, keras, np, tfk = tensorflow, keras_mod, numpy, tfk_trainer


_MIRRORED: Any = None


def get_strategy(name: str):
    """One MirroredStrategy per process (collective group keys are per strategy object)."""
    global _MIRRORED
    if name == "default":
        return tf.distribute.get_strategy()
    if _MIRRORED is None and tf.config.list_logical_devices("GPU"):
        _MIRRORED = tf.distribute.MirroredStrategy()  # every GPU, NCCL all-reduce
    if _MIRRORED is None:
        devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
        _MIRRORED = tf.distribute.MirroredStrategy(
            devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    return _MIRRORED


# -- workloads -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    build: Callable[[], Any]
    x_shape: tuple
    x_dtype: str
    classes: int
    batch: int
    quick_steps: int  # timed steps per call with --quick (spe=1)
    steps: int  # timed steps per call otherwise (spe=1)
    many_factor: int = 1  # times as many steps for spe >= 16, whose steps are cheaper
    vocab: int = 0


def _tiny_mlp():
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)]
    )


def _fashion_mlp():
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def _cnn():
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


def _transformer(vocab: int = 1000, seq: int = 32, dim: int = 64, blocks: int = 2):
    class TokenAndPosition(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.tokens = keras.layers.Embedding(vocab, dim)
            self.positions = keras.layers.Embedding(seq, dim)

        def call(self, x):
            return self.tokens(x) + self.positions(keras.ops.arange(keras.ops.shape(x)[-1]))

    tokens = keras.Input((seq,), dtype="int32")
    h = TokenAndPosition()(tokens)
    for _ in range(blocks):
        a = keras.layers.MultiHeadAttention(num_heads=4, key_dim=dim // 4)(h, h)
        h = keras.layers.LayerNormalization()(keras.layers.Add()([h, a]))
        f = keras.layers.Dense(2 * dim, activation="relu")(h)
        f = keras.layers.Dense(dim)(f)
        h = keras.layers.LayerNormalization()(keras.layers.Add()([h, f]))
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(tokens, keras.layers.Dense(10)(h))


WORKLOADS = {
    # Steps are chosen so that a timed call lasts well over the fixed cost of a
    # fit() call (50-100 ms on the 2-core machine of docs/benchmarks.md).
    "tiny_mlp": Workload("tiny_mlp", _tiny_mlp, (8,), "float32", 3, 32, 1024, 2048, 4),
    "fashion_mlp": Workload("fashion_mlp", _fashion_mlp, (784,), "float32", 10, 128, 96, 256),
    "cnn": Workload("cnn", _cnn, (28, 28, 1), "float32", 10, 128, 16, 64),
    "transformer": Workload(
        "transformer", _transformer, (32,), "int32", 10, 64, 16, 96, vocab=1000
    ),
}


def timed_steps(cfg: Config) -> int:
    wl = WORKLOADS[cfg.workload]
    steps = FLAGS.steps or cfg.steps
    if not steps:
        steps = wl.quick_steps if FLAGS.quick else wl.steps
        if cfg.spe >= 16:
            steps *= wl.many_factor
    return -(-steps // cfg.spe) * cfg.spe  # Keras runs whole executions on repeated data


# -- data ------------------------------------------------------------------------


class Data:
    """Synthetic data for one row: `steps` batches as arrays, and a pool of batches."""

    POOL = 16  # distinct batches cycled by tf.data, generators and PyDatasets

    def __init__(self, wl: Workload, steps: int):
        rng = np.random.default_rng(0)
        n = steps * wl.batch
        if wl.x_dtype == "int32":
            self.x = rng.integers(0, wl.vocab, size=(n, *wl.x_shape), dtype=np.int32)
        else:
            self.x = rng.standard_normal((n, *wl.x_shape), dtype=np.float32)
        self.y = rng.integers(0, wl.classes, size=(n,), dtype=np.int32)
        self.batch = wl.batch
        pool = min(self.POOL, steps)
        self.pool = [
            (self.x[i * wl.batch : (i + 1) * wl.batch], self.y[i * wl.batch : (i + 1) * wl.batch])
            for i in range(pool)
        ]
        px = np.concatenate([p[0] for p in self.pool])
        py = np.concatenate([p[1] for p in self.pool])
        self.dataset = (
            tf.data.Dataset.from_tensor_slices((px, py))
            .repeat()
            .batch(wl.batch, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE)
        )

    def arrays(self, steps: int) -> tuple:
        n = steps * self.batch
        return self.x[:n], self.y[:n]

    def generator(self, steps: int | None):
        """`steps` batches, or endless (None)."""
        pool = self.pool
        for i in itertools.count() if steps is None else range(steps):
            yield pool[i % len(pool)]

    def signature(self) -> tuple:
        x, y = self.pool[0]
        return (
            tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype)),
            tf.TensorSpec((None,), tf.as_dtype(y.dtype)),
        )


def _make_pydatasets():
    """PyDataset classes for tfk and Keras (2 worker threads each), made after the imports."""

    class TfkBatches(tfk.data.PyDataset):
        def __init__(self, pool, steps):
            super().__init__(workers=2)
            self.pool, self.steps = pool, steps

        def __len__(self):
            return self.steps

        def __getitem__(self, i):
            return self.pool[i % len(self.pool)]

    class KerasBatches(keras.utils.PyDataset):
        def __init__(self, pool, steps):
            super().__init__(workers=2)
            self.pool, self.steps = pool, steps

        def __len__(self):
            return self.steps

        def __getitem__(self, i):
            return self.pool[i % len(self.pool)]

    return TfkBatches, KerasBatches


# -- runners ---------------------------------------------------------------------


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _optimizer():
    return keras.optimizers.Adam(1e-3)


_WATCHER: Any = None


def watch_callback() -> Any:
    """A Keras callback that watches every batch end (train, test and predict) and only
    counts: the cheapest hook a user could write that still needs every batch boundary
    (its logs are never read, so nothing is copied from the device)."""
    global _WATCHER
    if _WATCHER is None:

        class WatchBatches(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.batches = 0

            def on_train_batch_end(self, batch, logs=None):
                self.batches += 1

            def on_test_batch_end(self, batch, logs=None):
                self.batches += 1

            def on_predict_batch_end(self, batch, logs=None):
                self.batches += 1

        _WATCHER = WatchBatches
    return _WATCHER()


class ModelRunner:
    """`tfk` or `keras`: the public fit/evaluate/predict API (with `watch=on`, a callback
    that watches every batch end)."""

    def __init__(self, kind: str, cfg: Config, data: Data, strategy, pyds_classes):
        self.kind, self.cfg, self.data = kind, cfg, data
        self.pyds = pyds_classes[0 if kind == "tfk" else 1]
        keras.utils.set_random_seed(0)
        with strategy.scope():
            net = WORKLOADS[cfg.workload].build()
            model = tfk.Model(net) if kind == "tfk" else net
            model.compile(
                optimizer=_optimizer(),
                loss=_loss(),
                steps_per_execution=cfg.spe,
                jit_compile=cfg.jit == "on",
            )
        self.model = model

    def run(self, steps: int, first: bool = False) -> None:
        """One call of `steps` steps (first: a finite source of exactly `steps` batches)."""
        cfg, data, model = self.cfg, self.data, self.model
        bs = data.batch
        if cfg.input == "numpy":
            x, y = data.arrays(steps)
            source: dict[str, Any] = {"x": x, "y": y, "batch_size": bs}
            if cfg.mode == "predict":
                del source["y"]
        elif cfg.input == "tfdata":
            ds = data.dataset.take(steps) if first else data.dataset
            source = {"x": ds} if first else {"x": ds, "steps": steps}
        elif cfg.input == "generator":
            # Keras 3.15 runs N+1 optimizer steps on a finite generator of N batches
            # when spe=1 (a peeked batch is replayed), and whole executions of spe
            # steps on an endless one: a 1-step call is endless for spe=1, finite else.
            finite = first and cfg.spe > 1
            gen = data.generator(steps if finite else None)
            source = {"x": gen} if finite else {"x": gen, "steps": steps}
        else:
            source = {"x": self.pyds(data.pool, steps)}
        watcher = watch_callback() if cfg.watch == "on" else None
        if watcher is not None:
            source["callbacks"] = [watcher]
        if cfg.mode == "fit":
            if "steps" in source:
                source["steps_per_epoch"] = source.pop("steps")
            before = int(model.optimizer.iterations.numpy())
            model.fit(**source, epochs=1, verbose=0, shuffle=False)
            done = int(model.optimizer.iterations.numpy()) - before
            if done != steps:
                raise AssertionError(f"{self.kind} fit ran {done} optimizer steps, not {steps}")
        elif cfg.mode == "evaluate":
            model.evaluate(**source, verbose=0)
        else:
            out = model.predict(**source, verbose=0)
            if len(out) != steps * bs:
                raise AssertionError(
                    f"{self.kind} predict returned {len(out)} rows, not {steps * bs}"
                )
        if self.kind == "tfk" and watcher is not None and watcher.batches != -(-steps // cfg.spe):
            # Not folded: one hook call per execution of `spe` steps.
            raise AssertionError(
                f"{self.kind} called the batch hook {watcher.batches} times for {steps} "
                f"steps at spe={cfg.spe}"
            )


class ReferenceRunner:
    """The hand-written loop: one tf.function, `for _ in tf.range(n)` over an iterator."""

    kind = "ref"

    def __init__(self, cfg: Config, data: Data, strategy, pyds_classes):
        self.cfg, self.data, self.strategy = cfg, data, strategy
        self.pyds = pyds_classes[0]
        keras.utils.set_random_seed(0)
        with strategy.scope():
            self.net = WORKLOADS[cfg.workload].build()
            self.optimizer = _optimizer()
            self.optimizer.build(self.net.trainable_variables)
        self.loss = _loss()
        self.fn = self._make(cfg.mode)

    def _make(self, mode: str):
        net, optimizer, loss_fn, strategy = self.net, self.optimizer, self.loss, self.strategy
        variables = net.trainable_variables
        replicas = strategy.num_replicas_in_sync
        jit = self.cfg.jit == "on"

        def train_step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, net(x, training=True)) / replicas
            optimizer.apply(tape.gradient(loss, variables), variables)

        def test_step(x, y):
            return loss_fn(y, net(x, training=False)) / replicas

        def predict_step(x):
            return net(x, training=False)

        def wrap(fn):
            return tf.function(fn, jit_compile=True) if jit else fn

        if mode == "fit":
            step = wrap(train_step)

            @tf.function
            def loop(iterator, n):
                for _ in tf.range(n):
                    x, y = next(iterator)
                    strategy.run(step, args=(x, y))

        elif mode == "evaluate":
            step = wrap(test_step)

            @tf.function
            def loop(iterator, n):
                total = tf.constant(0.0)
                for _ in tf.range(n):
                    x, y = next(iterator)
                    per_replica = strategy.run(step, args=(x, y))
                    total += strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
                return total / tf.cast(n, tf.float32)

        else:
            step = wrap(predict_step)

            @tf.function
            def loop(iterator, n):
                outputs = tf.TensorArray(tf.float32, size=tf.cast(n, tf.int32), infer_shape=False)
                for i in tf.range(tf.cast(n, tf.int32)):
                    x, _ = next(iterator)
                    out = strategy.run(step, args=(x,))
                    outputs = outputs.write(
                        i, tf.concat(strategy.experimental_local_results(out), axis=0)
                    )
                return outputs.concat()

        return loop

    def _dataset(self, steps: int, first: bool):
        data, cfg = self.data, self.cfg
        if cfg.input == "numpy":
            ds = tf.data.Dataset.from_tensor_slices(data.arrays(steps)).batch(data.batch)
        elif cfg.input == "tfdata":
            return data.dataset
        elif cfg.input == "generator":
            ds = tf.data.Dataset.from_generator(
                lambda: data.generator(None), output_signature=data.signature()
            )
        else:
            pyds = self.pyds(data.pool, steps)
            ds = tf.data.Dataset.from_generator(
                lambda: (pyds[i] for i in range(len(pyds))), output_signature=data.signature()
            )
        return ds.prefetch(tf.data.AUTOTUNE)

    def run(self, steps: int, first: bool = False) -> None:
        """`steps` steps in executions of `spe` steps: one call of the loop function each."""
        ds = self._dataset(steps, first)
        if self.strategy.num_replicas_in_sync > 1:
            ds = self.strategy.experimental_distribute_dataset(ds)
        iterator = iter(ds)
        spe = min(self.cfg.spe, steps)
        chunk = tf.constant(spe, tf.int64)
        before = int(self.optimizer.iterations.numpy())
        outs = [self.fn(iterator, chunk) for _ in range(steps // spe)]
        if self.cfg.mode == "fit":
            done = int(self.optimizer.iterations.numpy()) - before
            if done != steps:
                raise AssertionError(f"ref ran {done} optimizer steps, not {steps}")
        elif self.cfg.mode == "evaluate":
            float(sum(o.numpy() for o in outs))
        else:
            rows = len(np.concatenate([o.numpy() for o in outs]))
            if rows != steps * self.data.batch:
                raise AssertionError(
                    f"ref predict returned {rows} rows, not {steps * self.data.batch}"
                )


def make_runner(kind: str, cfg: Config, data: Data, strategy, pyds_classes):
    if kind == "ref":
        return ReferenceRunner(cfg, data, strategy, pyds_classes)
    return ModelRunner(kind, cfg, data, strategy, pyds_classes)


# -- measuring -------------------------------------------------------------------


def _short_error(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0][:160] if lines else ''}"


def _clock(fn: Callable[[], None], cpu: list | None = None) -> float:
    """Wall seconds of `fn()`; appends the process CPU seconds it took to `cpu`."""
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    if cpu is not None:
        cpu.append(time.process_time() - start_cpu)
    return time.perf_counter() - start


def process_warmup(pyds_classes) -> None:
    """Initializes TF's runtime (thread pools, grappler, tf.data) once, untimed, so the
    first measured row does not pay for it."""
    cfg = Config("tiny_mlp", "numpy", 1, "fit")
    data = Data(WORKLOADS["tiny_mlp"], 4)
    for kind in RUNNERS:
        runner = make_runner(kind, cfg, data, get_strategy("default"), pyds_classes)
        runner.run(1, first=True)
        runner.run(4)
    keras.backend.clear_session()
    gc.collect()


def measure(cfg: Config, rounds: int, pyds_classes) -> dict[str, Any]:
    """One row: build, first and warm 1-step calls, then interleaved timed rounds."""
    steps = timed_steps(cfg)
    data = Data(WORKLOADS[cfg.workload], steps)
    strategy = get_strategy(cfg.strategy)
    row: dict[str, Any] = {
        "config": dataclasses.asdict(cfg),
        "steps": steps,
        "batch": data.batch,
        "rounds": rounds,
        "errors": {},
        "first_call_s": {},
        "warm_call_s": {},
        "times_s": {k: [] for k in RUNNERS},
        "cpu_s": {k: [] for k in RUNNERS},
    }
    runners: dict[str, Any] = {}
    # The 1-step calls go in a rotated order too, so no runner always traces first.
    start = list(RUNNERS)
    for kind in start:
        try:
            runner = make_runner(kind, cfg, data, strategy, pyds_classes)
            row["first_call_s"][kind] = _clock(lambda r=runner: r.run(1, first=True))
            row["warm_call_s"][kind] = _clock(lambda r=runner: r.run(1, first=True))
            runners[kind] = runner
        except Exception as e:  # a runner that fails is reported, not fatal
            row["errors"][kind] = _short_error(e)
    for r in range(rounds):
        order = [k for k in RUNNERS[r % 3 :] + RUNNERS[: r % 3] if k in runners]
        for kind in order:
            try:
                runner = runners[kind]
                row["times_s"][kind].append(
                    _clock(lambda r=runner: r.run(steps), row["cpu_s"][kind])
                )
            except Exception as e:
                row["errors"][kind] = _short_error(e)
                del runners[kind]
    summarize(row)
    runners.clear()
    keras.backend.clear_session()
    gc.collect()
    return row


def summarize(row: dict[str, Any]) -> None:
    samples = row["steps"] * row["batch"]
    times = row["times_s"]
    row["samples_per_s"] = {
        k: statistics.median(samples / t for t in times[k])
        if times[k] and k not in row["errors"]
        else None
        for k in RUNNERS
    }

    def ratio(a: str, b: str) -> float | None:
        if row["errors"].get(a) or row["errors"].get(b):
            return None
        n = min(len(times[a]), len(times[b]))
        if not n:
            return None
        return statistics.median(times[b][i] / times[a][i] for i in range(n))

    row["tfk_over_keras"] = ratio("tfk", "keras")
    row["tfk_over_ref"] = ratio("tfk", "ref")
    times = row["cpu_s"]  # the same ratios in process CPU time (less sensitive to neighbours)
    row["tfk_over_keras_cpu"] = ratio("tfk", "keras")
    row["tfk_over_ref_cpu"] = ratio("tfk", "ref")
    row["first_step_s"] = {
        k: row["first_call_s"][k] - row["warm_call_s"][k]
        for k in row["first_call_s"]
        if k in row["warm_call_s"]
    }


# -- memory (fresh subprocesses) ---------------------------------------------------


def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Resets this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def memory_child(spec: str) -> None:
    """Runs in a fresh process: one runner of one row (or nothing: `baseline`).

    Importing TensorFlow peaks higher than a small model ever does, so the peak
    is reset (`/proc/self/clear_refs`) after the imports and the data, and the
    reported peak is the high-water mark of the runner's build and calls (where
    the reset is unavailable: the process peak, imports included).
    """
    request = json.loads(spec)
    cfg = Config(**request["config"])
    runner_kind = request["runner"]
    import_tensorflow(2 if cfg.strategy == "mirrored" else 1)
    pyds_classes = _make_pydatasets()
    steps = request["steps"]
    data = Data(WORKLOADS[cfg.workload], steps)
    gc.collect()
    result: dict[str, Any] = {"runner": runner_kind}
    reset = _reset_peak_rss()
    start_kb = _status_kb("VmRSS")
    try:
        if runner_kind != "baseline":
            runner = make_runner(runner_kind, cfg, data, get_strategy(cfg.strategy), pyds_classes)
            runner.run(1, first=True)
            runner.run(1, first=True)
            runner.run(steps)
    except Exception as e:  # a runner that fails is reported, not fatal
        result["error"] = _short_error(e)
    if reset:
        result["peak_mb"] = _status_kb("VmHWM") / 1024.0
        result["start_mb"] = start_kb / 1024.0
        result["method"] = "VmHWM after reset"
    else:
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        result["method"] = "ru_maxrss (imports included)"
    print("MEMORY_RESULT " + json.dumps(result), flush=True)


def run_memory_children(jobs: list[tuple[Config, str, int]], parallel: int) -> list[dict]:
    """Runs `(config, runner, steps)` children, `parallel` at a time (peak RSS is per
    process, so children running side by side do not disturb each other's numbers)."""
    results: list[dict | None] = [None] * len(jobs)
    running: list[tuple[int, subprocess.Popen]] = []
    pending = list(enumerate(jobs))

    def reap(index: int, proc: subprocess.Popen) -> None:
        stdout, stderr = proc.communicate()
        line = next((ln for ln in stdout.splitlines() if ln.startswith("MEMORY_RESULT ")), None)
        if line is None:
            results[index] = {"error": f"child exited {proc.returncode}: {stderr.strip()[-300:]}"}
        else:
            results[index] = json.loads(line[len("MEMORY_RESULT ") :])

    while pending or running:
        while pending and len(running) < parallel:
            index, (cfg, kind, steps) = pending.pop(0)
            spec = json.dumps({"config": dataclasses.asdict(cfg), "runner": kind, "steps": steps})
            proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), f"--memory_child={spec}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            running.append((index, proc))
        index, proc = running.pop(0)
        reap(index, proc)
    return results  # type: ignore[return-value]


def memory_mode() -> str:
    return FLAGS.memory or ("one" if FLAGS.quick else "basic")


def memory_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows whose runners get a memory measurement, per `--memory`."""
    mode = memory_mode()
    if mode == "none":
        return []
    if mode == "all":
        return rows
    chosen, seen = [], set()
    for row in rows:
        c = row["config"]
        if c["input"] != "numpy" or c["strategy"] != "default" or c["jit"] != "off":
            continue
        if c.get("watch") == "on":  # the same memory as the row without the callback
            continue
        if mode == "one" and (c["workload"] in seen or c["mode"] != "fit"):
            continue
        seen.add(c["workload"])
        chosen.append(row)
    return chosen


def measure_memory(rows: list[dict[str, Any]]) -> None:
    """Adds `row["memory"]`: per-runner peak RSS, and a baseline per workload."""
    chosen = memory_rows(rows)
    jobs: list[tuple[Config, str, int]] = []
    owners: list[tuple[dict[str, Any] | None, str, str]] = []
    baselines: dict[str, int] = {}
    for row in chosen:
        cfg = Config(**row["config"])
        for kind in RUNNERS:
            jobs.append((cfg, kind, row["steps"]))
            owners.append((row, kind, cfg.workload))
        if cfg.workload not in baselines and memory_mode() != "one":
            baselines[cfg.workload] = len(jobs)
            jobs.append((cfg, "baseline", row["steps"]))
            owners.append((None, "baseline", cfg.workload))
    if not jobs:
        return
    print(f"Peak memory: {len(jobs)} fresh subprocesses, 2 at a time", flush=True)
    results = run_memory_children(jobs, parallel=2)
    base = {owners[i][2]: results[i] for i in baselines.values()}
    for (row, kind, workload), result in zip(owners, results):
        if row is not None:
            row.setdefault("memory", {"baseline": base.get(workload, {})})[kind] = result


# -- cold start (a fresh interpreter per runner) -------------------------------------

# The child: everything a newcomer's script does, timed from the parent's spawn.
# argv: the case (JSON) and the parent's time.monotonic() just before the spawn
# (CLOCK_MONOTONIC is system-wide on Linux, so both processes read the same clock).
COLD_CHILD = r"""
import json, os, resource, sys, time

SPAWNED = float(sys.argv[2])
spec = json.loads(sys.argv[1])


def stamp():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall": time.monotonic() - SPAWNED, "cpu": usage.ru_utime + usage.ru_stime}


marks = {"start": stamp()}
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import numpy as np
import tensorflow as tf
import keras

if spec["runner"] == "tfk":
    import tfk_trainer as tfk
marks["import"] = stamp()

if spec["network"] == "cnn":
    layers = [
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ]
    shape = (28, 28, 1)
else:
    layers = [
        keras.Input((784,)),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(10),
    ]
    shape = (784,)
steps, batch, split = spec["steps"], spec["batch"], spec["validation_split"]
n = round(steps * batch / (1.0 - split))
rng = np.random.default_rng(0)
x = rng.standard_normal((n, *shape), dtype=np.float32)
y = rng.integers(0, 10, size=(n,), dtype=np.int32)
keras.utils.set_random_seed(0)
net = keras.Sequential(layers)
model = tfk.Model(net) if spec["runner"] == "tfk" else net
model.compile(
    optimizer="adam",
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
marks["compiled"] = stamp()


class FirstStep(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if "first_step" not in marks:
            marks["first_step"] = stamp()


history = model.fit(
    x, y, batch_size=batch, epochs=1, verbose=0, validation_split=split, callbacks=[FirstStep()]
)
marks["fit_end"] = stamp()
done = int(model.optimizer.iterations.numpy())
if done != steps:
    raise AssertionError(f"{spec['runner']} fit ran {done} optimizer steps, not {steps}")
if split and "val_loss" not in history.history:
    raise AssertionError(f"{spec['runner']} fit did not validate: {history.history}")
print(
    "COLD_RESULT "
    + json.dumps({"marks": marks, "tensorflow": tf.__version__, "keras": keras.__version__}),
    flush=True,
)
"""


@dataclasses.dataclass(frozen=True)
class ColdCase:
    name: str
    network: str  # "cnn" or "mlp" (the cnn and fashion_mlp workloads' networks)
    validation_split: float = 0.0
    steps: int = 4
    batch: int = 32


COLD_CASES = {
    c.name: c
    for c in (
        ColdCase("cnn", "cnn"),
        ColdCase("cnn_val", "cnn", validation_split=0.2),
        ColdCase("mlp", "mlp"),
        ColdCase("mlp_val", "mlp", validation_split=0.2),
    )
}
COLD_RUNNERS = ("tfk", "keras")
COLD_BASE = "base"  # --cold_compare: tfk_trainer imported from another checkout
COLD_MARKS = ("import", "first_step", "fit_end")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def byte_compile(root: str) -> None:
    """Byte-compiles `root`/tfk_trainer, as `pip install` does: Python reads the
    `.pyc` files even under PYTHONDONTWRITEBYTECODE, so no child spends its
    import compiling the package's sources (TF's and Keras's are compiled at
    install time)."""
    import compileall

    compileall.compile_dir(os.path.join(root, "tfk_trainer"), quiet=1)


def run_cold_child(case: ColdCase, runner: str, compare: str | None = None) -> dict[str, Any]:
    """One fresh interpreter: `{"marks": {mark: {"wall", "cpu"}}}`, or `{"error": ...}`."""
    spec = json.dumps(
        {**dataclasses.asdict(case), "runner": "tfk" if runner == COLD_BASE else runner}
    )
    env = dict(os.environ)
    root = compare if runner == COLD_BASE else _ROOT
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    spawned = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", COLD_CHILD, spec, repr(spawned)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=600,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("COLD_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        return {"error": f"child exited {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    return json.loads(line[len("COLD_RESULT ") :])


def measure_cold(
    cases: list[ColdCase], rounds: int, compare: str | None = None
) -> list[dict[str, Any]]:
    """Per case, `rounds` fresh processes per runner, the order rotating each round."""
    runners = COLD_RUNNERS + ((COLD_BASE,) if compare else ())
    rows = []
    for case in cases:
        row: dict[str, Any] = {
            "case": dataclasses.asdict(case),
            "runners": list(runners),
            "runs": {k: [] for k in runners},
            "errors": {},
        }
        for r in range(rounds):
            shift = r % len(runners)
            for runner in runners[shift:] + runners[:shift]:
                if runner in row["errors"]:
                    continue
                result = run_cold_child(case, runner, compare)
                if "error" in result:
                    row["errors"][runner] = result["error"]
                else:
                    row["runs"][runner].append(result)
        summarize_cold(row)
        rows.append(row)
        ratios = row["ratios"].get("tfk", {})
        print(
            f"cold {case.name}: first step tfk/keras {_fmt_ratio(ratios.get('first_step'))}, "
            f"after the imports {_fmt_ratio(ratios.get('after_import'))}",
            flush=True,
        )
    return rows


def _since_import(run: dict, clock: str) -> float:
    return run["marks"]["first_step"][clock] - run["marks"]["import"][clock]


def summarize_cold(row: dict[str, Any]) -> None:
    """Medians per runner and mark; ratios (keras time / runner time, like the other
    tables: above 1 means faster than Keras) within each round, then the median."""
    runs = row["runs"]
    medians: dict[str, dict[str, float]] = {}
    for runner in row["runners"]:
        if not runs[runner]:
            continue
        medians[runner] = {}
        for mark in COLD_MARKS:
            for clock in ("wall", "cpu"):
                medians[runner][f"{mark}_{clock}"] = statistics.median(
                    r["marks"][mark][clock] for r in runs[runner]
                )
        for clock in ("wall", "cpu"):
            medians[runner][f"after_import_{clock}"] = statistics.median(
                _since_import(r, clock) for r in runs[runner]
            )
    row["median_s"] = medians

    measures: dict[str, Callable[[dict], float]] = {
        "first_step": lambda r: r["marks"]["first_step"]["wall"],
        "first_step_cpu": lambda r: r["marks"]["first_step"]["cpu"],
        "after_import": lambda r: _since_import(r, "wall"),
        "after_import_cpu": lambda r: _since_import(r, "cpu"),
        "fit_end": lambda r: r["marks"]["fit_end"]["wall"],
    }
    row["ratios"] = {}
    for runner in row["runners"]:
        n = min(len(runs[runner]), len(runs["keras"]))
        if runner == "keras" or not n or runner in row["errors"] or "keras" in row["errors"]:
            continue
        row["ratios"][runner] = {
            name: statistics.median(
                value(runs["keras"][i]) / value(runs[runner][i]) for i in range(n)
            )
            for name, value in measures.items()
        }


def cold_table(rows: list[dict[str, Any]]) -> str:
    runners = rows[0]["runners"] if rows else list(COLD_RUNNERS)
    names = " / ".join(runners)
    vs = [k for k in runners if k != "keras"]
    header = (
        f"| case | imports s ({names}) | first step s ({names}) | first step CPU s ({names}) "
        f"| import to first step s ({names}) | import to first step CPU s ({names}) "
        f"| end of fit s ({names}) "
        + "".join(
            f"| first step keras/{k} | import to first step keras/{k} "
            f"| import to first step CPU keras/{k} | end of fit keras/{k} "
            for k in vs
        )
        + "|"
    )
    lines = [header, "|" + "---|" * (header.count(" | ") + 1)]
    for row in rows:
        m = row["median_s"]

        def cells(key: str, row: dict[str, Any] = row, m: dict = m) -> str:
            return " / ".join(
                "fails" if k in row["errors"] or k not in m else f"{m[k][key]:.2f}"
                for k in row["runners"]
            )

        c = row["case"]
        label = c["name"] + (
            f" (validation_split={c['validation_split']})" if c["validation_split"] else ""
        )
        line = (
            f"| {label} | {cells('import_wall')} | {cells('first_step_wall')} "
            f"| {cells('first_step_cpu')} | {cells('after_import_wall')} "
            f"| {cells('after_import_cpu')} | {cells('fit_end_wall')} "
        )
        for k in vs:
            r = row["ratios"].get(k, {})
            line += "".join(
                f"| {_fmt_ratio(r.get(name))} "
                for name in ("first_step", "after_import", "after_import_cpu", "fit_end")
            )
        lines.append(line + "|")
    return "\n".join(lines)


def cold_markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    versions = next((r["runs"][k][0] for r in rows for k in r["runners"] if r["runs"][k]), {})
    parts = [
        "# tfk_trainer cold-start results",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, TensorFlow "
        f"{versions.get('tensorflow', '?')}, Keras {versions.get('keras', '?')}. Load average "
        f"at start {meta['load_start'][0]:.2f}, at end {meta['load_end'][0]:.2f}. "
        f"{meta['rounds']} fresh processes per runner and case; total {meta['elapsed_s']:.0f} s.",
        "",
        "Times from the spawn of the interpreter (medians); ratios are keras time / runner "
        "time (above 1.00x: faster than Keras), medians of per-round ratios."
        + (f" `{COLD_BASE}`: tfk_trainer from {meta['compare']}." if meta.get("compare") else ""),
        "",
        cold_table(rows),
    ]
    errors = [f"- {r['case']['name']}, {k}: {e}" for r in rows for k, e in r["errors"].items()]
    if errors:
        parts += ["", "Runners that failed:", "", *errors]
    return "\n".join(parts) + "\n"


# The large-array row's child: builds the array, then (unless "floor") one fit() of two
# steps; prints a JSON line with the peak RSS and the seconds to the first step.
LARGE_ARRAY_CHILD = """
import json, os, resource, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
gb, runner = float(sys.argv[1]), sys.argv[2]
features = 1024
rows = int(gb * 1e9) // (4 * features)
x = np.ones((rows, features), np.float32)
y = np.zeros((rows,), np.int64)
out = {"runner": runner, "rows": rows, "gb": x.nbytes / 1e9}
if runner != "floor":
    import keras
    import tfk_trainer as tfk
    net = keras.Sequential([keras.Input((features,)), keras.layers.Dense(2)])
    model = tfk.Model(net)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    first = []
    started = time.perf_counter()
    callback = tfk.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: first or first.append(time.perf_counter())
    )
    model.fit(x, y, batch_size=256, epochs=1, steps_per_epoch=2, shuffle=True, verbose=0,
              callbacks=[callback])
    out["first_step_s"] = first[0] - started
    out["fit_s"] = time.perf_counter() - started
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def large_array_main(gb: float) -> None:
    """The large-array row: arrays are read outside every graph, so a multi-GB array
    costs its own size, not serialised graph copies."""
    if gb <= 0:
        raise app.UsageError(f"--large_array_gb must be > 0; received {gb}.")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    results = []
    for runner in ("floor", "tfk"):
        done = subprocess.run(
            [sys.executable, "-c", LARGE_ARRAY_CHILD, str(gb), runner],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"large-array {runner} child failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    floor, tfk_row = results
    print("| array GB | rows | tfk peak RSS MB | floor RSS MB | first step s | fit s |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {tfk_row['gb']:.2f} | {tfk_row['rows']:,} | {tfk_row['peak_rss_mb']:,.0f} | "
        f"{floor['peak_rss_mb']:,.0f} | {tfk_row['first_step_s']:.2f} | {tfk_row['fit_s']:.2f} |"
    )


def cold_main() -> None:
    names = FLAGS.cold_cases or list(COLD_CASES)
    rounds = FLAGS.cold_rounds or (3 if FLAGS.quick else 5)
    compare = os.path.abspath(FLAGS.cold_compare) if FLAGS.cold_compare else None
    if compare and not os.path.isdir(os.path.join(compare, "tfk_trainer")):
        raise app.UsageError(f"--cold_compare: {compare!r} holds no tfk_trainer package.")
    for root in [_ROOT] + ([compare] if compare else []):
        byte_compile(root)
    started, load_start = time.perf_counter(), os.getloadavg()
    print(f"Cold start: {len(names)} cases, {rounds} rounds, fresh processes", flush=True)
    rows = measure_cold([COLD_CASES[n] for n in names], rounds, compare)
    meta = {
        "command": " ".join(["python", "tools/benchmark.py", *sys.argv[1:]]),
        "rounds": rounds,
        "compare": compare,
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "elapsed_s": time.perf_counter() - started,
    }
    text = cold_markdown(meta, rows)
    print()
    print(text, flush=True)
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            if FLAGS.output.endswith(".json"):
                json.dump({"meta": meta, "cold": rows}, f, indent=1)
            else:
                f.write(text)
    if any(r["errors"] for r in rows):
        sys.exit(1)


# -- targets and report ------------------------------------------------------------


def _fmt_rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _fmt_ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _runner_cell(row: dict[str, Any], kind: str) -> str:
    if kind in row["errors"]:
        return "fails"
    return _fmt_rate(row["samples_per_s"][kind])


def _memory_cell(row: dict[str, Any]) -> str:
    mem = row.get("memory")
    if not mem:
        return "-"
    cells = []
    for kind in RUNNERS:
        m = mem.get(kind, {})
        cells.append("fails" if "error" in m or "peak_mb" not in m else f"{m['peak_mb']:.0f}")
    base = mem.get("baseline", {})
    suffix = f" (base {base['peak_mb']:.0f})" if "peak_mb" in base else ""
    return " / ".join(cells) + suffix


def _first_cell(row: dict[str, Any]) -> str:
    fs = row["first_step_s"]
    parts = [f"{fs[k]:.2f}" if k in fs else "fails" for k in ("tfk", "keras")]
    return " / ".join(parts)


def _warm_cell(row: dict[str, Any]) -> str:
    warm = row["warm_call_s"]
    return " / ".join(f"{warm[k] * 1000:.0f}" if k in warm else "fails" for k in RUNNERS)


HEADER = (
    "| workload | input | spe | mode | strategy | jit | watched | tfk samples/s | keras samples/s "
    "| ref samples/s | tfk/keras (median) | tfk/ref (median) | tfk/keras CPU time "
    "| tfk/ref CPU time | first-step s (tfk / keras) "
    "| warm 1-step call ms (tfk / keras / ref) | peak MB (tfk / keras / ref) |"
)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for row in rows:
        c = row["config"]
        lines.append(
            f"| {c['workload']} | {c['input']} | {c['spe']} | {c['mode']} | {c['strategy']} "
            f"| {c['jit']} | {c.get('watch', 'off')} | {_runner_cell(row, 'tfk')} | {_runner_cell(row, 'keras')} "
            f"| {_runner_cell(row, 'ref')} | {_fmt_ratio(row['tfk_over_keras'])} "
            f"| {_fmt_ratio(row['tfk_over_ref'])} | {_fmt_ratio(row['tfk_over_keras_cpu'])} "
            f"| {_fmt_ratio(row['tfk_over_ref_cpu'])} | {_first_cell(row)} | {_warm_cell(row)} "
            f"| {_memory_cell(row)} |"
        )
    return "\n".join(lines)


def _label(row: dict[str, Any]) -> str:
    c = row["config"]
    return (
        f"{c['workload']} {c['mode']} {c['input']} spe={c['spe']}"
        + (f" {c['strategy']}" if c["strategy"] != "default" else "")
        + (" jit" if c["jit"] == "on" else "")
        + (" watched" if c.get("watch") == "on" else "")
    )


def _check(name: str, rows: list[dict[str, Any]], key: str, bound: float) -> dict[str, Any]:
    """A ratio target, judged on wall-clock ratios and, separately, on CPU-time ratios."""
    out: dict[str, Any] = {"target": name, "details": []}
    for suffix, label in (("", "wall clock"), ("_cpu", "CPU time")):
        k = key + suffix
        considered = [r for r in rows if r.get(k) is not None]
        missed = [r for r in considered if r[k] < bound]
        if not considered:
            out[label] = "not measured"
            continue
        worst = min(considered, key=lambda r: r[k])
        out[label] = (
            "met" if not missed else f"missed in {len(missed)} of {len(considered)} rows"
        ) + f" (lowest {worst[k]:.2f}x: {_label(worst)})"
        out["details"] += [
            f"{label}: {_label(r)}: {r[k]:.3f}x (needs {bound:.2f}x)" for r in missed
        ]
    out["status"] = f"wall clock: {out['wall clock']}; CPU time: {out['CPU time']}"
    return out


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    fits = [r for r in rows if r["config"]["mode"] == "fit"]
    out = [
        _check(
            "tiny MLP, spe=1: tfk >= 1.5x Keras fit",
            [r for r in fits if r["config"]["workload"] == "tiny_mlp" and r["config"]["spe"] == 1],
            "tfk_over_keras",
            1.5,
        ),
        _check("every fit row: tfk >= 1.0x Keras fit", fits, "tfk_over_keras", 1.0),
        _check(
            "predict: tfk >= 1.2x Keras",
            [r for r in rows if r["config"]["mode"] == "predict"],
            "tfk_over_keras",
            1.2,
        ),
        _check(
            "spe >= 16: tfk >= 0.95x the reference loop",
            [r for r in rows if r["config"]["spe"] >= 16],
            "tfk_over_ref",
            0.95,
        ),
        _check(
            "watched batches (no folding): tfk >= 0.95x the reference loop",
            [r for r in fits if r["config"].get("watch") == "on"],
            "tfk_over_ref",
            0.95,
        ),
    ]
    mem_rows = [
        r
        for r in rows
        if r.get("memory")
        and "peak_mb" in r["memory"].get("tfk", {})
        and "peak_mb" in r["memory"].get("keras", {})
    ]
    if mem_rows:
        over = []
        for r in mem_rows:
            t, k = r["memory"]["tfk"]["peak_mb"], r["memory"]["keras"]["peak_mb"]
            if t > k:
                over.append(f"{_label(r)}: tfk {t:.0f} MB vs keras {k:.0f} MB (+{t - k:.0f} MB)")
        out.append(
            {
                "target": "peak memory: tfk <= Keras",
                "status": "met"
                if not over
                else f"missed in {len(over)} of {len(mem_rows)} measured rows",
                "details": over,
            }
        )
    else:
        out.append({"target": "peak memory: tfk <= Keras", "status": "not measured", "details": []})
    return out


def targets_text(results: list[dict[str, Any]]) -> str:
    lines = []
    for t in results:
        lines.append(f"- {t['target']}: {t['status']}")
        for d in t["details"]:
            lines.append(f"  - {d}")
    return "\n".join(lines)


def errors_text(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        for kind, err in r["errors"].items():
            lines.append(f"- {_label(r)}, {kind}: {err}")
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "load_average": os.getloadavg(),
    }


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    m = meta["machine"]
    parts = [
        "# tfk_trainer benchmark results",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, TensorFlow "
        f"{m['tensorflow']}, Keras {m['keras']}. Load average at start "
        f"{meta['load_start'][0]:.2f}, at end {meta['load_end'][0]:.2f}. "
        f"{meta['rounds']} rounds; total {meta['elapsed_s']:.0f} s.",
        "",
        table(rows),
        "",
        "Targets:",
        "",
        targets_text(meta["targets"]),
    ]
    errors = errors_text(rows)
    if errors:
        parts += ["", "Runners that failed:", "", errors]
    return "\n".join(parts) + "\n"


# -- main --------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.memory_child:
        memory_child(FLAGS.memory_child)
        return
    check_flag_values()
    if FLAGS.cold:
        cold_main()
        return
    if FLAGS.large_array_gb:
        large_array_main(FLAGS.large_array_gb)
        return
    if FLAGS.gpu and not gpus_visible():
        print(
            "benchmark --gpu: no GPU is visible to TensorFlow (tf.config.list_physical_devices"
            "('GPU') is empty); GPU numbers cannot be measured on this machine.",
            file=sys.stderr,
        )
        sys.exit(2)
    configs = select_matrix()
    if not configs:
        raise app.UsageError("The flags select no measurement.")
    rounds = FLAGS.rounds or (3 if FLAGS.quick else 5)
    import_tensorflow(2 if any(c.strategy == "mirrored" for c in configs) else 1)
    tf.get_logger().setLevel("ERROR")
    # Keras warns when a finite 1-step source ends inside an execution (the 1-step calls).
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    pyds_classes = _make_pydatasets()
    started = time.perf_counter()
    load_start = os.getloadavg()
    print(
        f"{len(configs)} measurements, {rounds} rounds each; load average {load_start[0]:.2f}",
        flush=True,
    )
    process_warmup(pyds_classes)
    rows = []
    for i, cfg in enumerate(configs):
        t0 = time.perf_counter()
        try:
            row = measure(cfg, rounds, pyds_classes)
        except Exception:  # keep the other rows
            traceback.print_exc()
            continue
        rows.append(row)
        print(
            f"[{i + 1}/{len(configs)}] {cfg.key()}: tfk/keras {_fmt_ratio(row['tfk_over_keras'])}"
            f" (CPU {_fmt_ratio(row['tfk_over_keras_cpu'])}), tfk/ref "
            f"{_fmt_ratio(row['tfk_over_ref'])} (CPU {_fmt_ratio(row['tfk_over_ref_cpu'])}) "
            f"({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
    measure_memory(rows)
    meta = {
        "command": " ".join(["python", "tools/benchmark.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "rounds": rounds,
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "elapsed_s": time.perf_counter() - started,
        "targets": targets(rows),
    }
    text = markdown(meta, rows)
    print()
    print(text, flush=True)
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            if FLAGS.output.endswith(".json"):
                json.dump({"meta": meta, "rows": rows}, f, indent=1)
            else:
                f.write(text)
    if not rows:
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
