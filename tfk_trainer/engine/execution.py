"""The compiled execution: up to N steps per call, inside one `tf.function`.

An execution is a `tf.while_loop` whose iterations each run one
`strategy.run(step)`. The number of steps is a *tensor* argument, so capping
the last execution of an epoch at the steps that remain never retraces.
It comes in two forms:

- *until the data ends*: each iteration reads `iterator.get_next_as_optional()`
  and the loop ends early on an empty Optional (the one end-of-data
  convention). The execution returns how many steps ran.
- *exact*: for iterators the driver knows hold at least `num_steps` more
  batches (in-memory arrays, whose batch count the engine itself made),
  each iteration reads `iterator.get_next()` directly. This skips the
  Optional and the `tf.cond` around the step, which is a measurable share of
  a small step.
Train, test and predict share the two loop skeletons (`_exact_loop`,
`_until_end_loop`); predict adds its outputs as loop state, in input order
(engine/predict_order.py).
Logs are not returned: metric variables stay on the device and `read_logs`
reads them (in cross-replica context, which sums replica states) only when
asked.

Autograph: the loops are written with `tf.while_loop`/`tf.cond`, and the
engine's step code has Python control flow only on Python values, so
neither needs autograph. It is used only when the step runs user code that
autograph converts: an override of a step hook, a network that is not a
Keras layer, or a loss class, loss function or metric class defined outside
Keras and the engine (`engine.build.step_autograph`; Keras itself is never
converted, by Keras's fit either).
Converting the engine's own functions cost seconds of a fresh process's
first `fit()` (docs/benchmarks.md, "Cold start") and built the same graph.

XLA: the per-replica step is a nested `tf.function(jit_compile=True)`; the
loop and the iterator stay outside XLA, which cannot compile them. Under
TPUStrategy the whole replica function is compiled by the TPU anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tfk_trainer import distribute
from tfk_trainer.engine import predict_order

log = logging.getLogger("tfk_trainer")

# Predict steps update no variables, so consecutive steps of one execution may
# overlap (the next batch's forward pass starting while this one finishes);
# stateful ops, the iterator's reads among them, still run in order, so rows
# keep their order. A transformer predicted 1.3-1.8x faster this way on 2 cores.
# Train and test steps update variables (weights, metrics), which orders every
# step after the last: nothing to gain there.
_PREDICT_PARALLEL_ITERATIONS = 10


def resolve_jit_compile(
    jit_compile: bool | str, strategy: tf.distribute.Strategy, run_eagerly: bool
) -> bool:
    """What `jit_compile` means here; `"auto"` documented in docs/architecture.md.

    - `run_eagerly=True`: never compiled.
    - TPUStrategy: always (the TPU compiles everything with XLA).
    - Multi-replica non-TPU strategies (Mirrored, MultiWorkerMirrored): "auto"
      compiles where every replica is a GPU (as Keras 3 does; falling back
      with a warning if XLA cannot compile the step), and is off on CPU
      replicas, where XLA cannot reach replica variables across logical CPU
      devices (`distribute.xla_replicas`). An explicit True on CPU replicas
      is an error rather than a crash later.
    - One replica: "auto" is on where a GPU is visible (falling back with a
      warning if XLA cannot compile the step) and off on CPU-only hosts,
      where XLA measured 0.2-0.5x the speed of plain graphs.
    """
    if run_eagerly:
        return False
    if distribute.is_tpu(strategy):
        return True
    multi_replica = distribute.is_multi_replica(strategy)
    if jit_compile is True:
        if multi_replica and distribute.cpu_replicas(strategy):
            raise ValueError(
                "jit_compile=True cannot run under a multi-replica strategy on CPU devices "
                f"({type(strategy).__name__} with {distribute.num_replicas(strategy)} replicas): "
                "XLA cannot access variables placed on other logical CPU devices. Use "
                'jit_compile="auto" or False here; XLA works on one device, GPUs and TPUs.'
            )
        return True
    if jit_compile is False:
        return False
    if multi_replica:
        return distribute.xla_replicas(strategy)
    return bool(tf.config.list_logical_devices("GPU"))


def composite_inputs_disable_xla(config: Any, x_spec: Any) -> bool:
    """Whether `jit_compile="auto"` turns XLA off for these inputs: XLA cannot
    take `tf.RaggedTensor` or `tf.SparseTensor` arguments (Keras's "auto" falls
    back the same way). An explicit `jit_compile=True` is left to XLA."""
    auto = config is None or config.jit_compile == "auto"
    composite = (tf.RaggedTensorSpec, tf.SparseTensorSpec)
    return auto and any(isinstance(s, composite) for s in tf.nest.flatten(x_spec))


_LIBRARIES = ("keras", "tf_keras", "tensorflow")


# The engine's step code (the Model's steps and loss arithmetic, compile's loss
# wrapper); other tfk_trainer modules (the binary's models) count as user code.
def _engine_module(module: str) -> bool:
    """tfk_trainer's own code (the model facade, the engine, compile's loss
    wrappers), which has no Python control flow on tensors."""
    return module == "tfk_trainer" or module.startswith("tfk_trainer.")


def library_code(fn: Any) -> bool:
    """`fn` is Keras's or TensorFlow's (which autograph never converts) or the
    engine's step code (which has no Python control flow on tensors)."""
    module = getattr(fn, "__module__", None) or ""
    return _engine_module(module) or module.split(".")[0] in _LIBRARIES


def loss_needs_autograph(loss: Any) -> bool:
    """A loss whose code autograph would convert inside a step: a `Loss` subclass
    with its own `call`, or a user function wrapped by compile's `FunctionLoss`
    (Keras's own wrapper is never converted, nor the function it calls)."""
    call = getattr(type(loss), "call", None)
    if not library_code(call):
        return True
    fn = getattr(loss, "fn", None)
    wrapped_by_engine = _engine_module(getattr(call, "__module__", None) or "")
    return wrapped_by_engine and fn is not None and not library_code(fn)


class XlaFallback(Exception):
    """Raised once when `"auto"` XLA failed to compile; the caller restarts the epoch."""


_XLA_FAILURE_MARKERS = (
    "XLA",
    "unsupported operations",
    "jit_compile",
    "Detected unsupported",
    "compilation",
)


class CompiledFunction:
    """One multi-step function in its two forms (until the data ends, and exact),
    with the `"auto"` XLA fallback around its first call.

    Each form is built and traced on first use, so a model trained only on
    arrays never traces the until-the-end form, and the reverse.
    """

    def __init__(
        self,
        build: Callable[[bool, bool], Callable],
        *,
        jit_compile: bool,
        allow_fallback: bool,
        kind: str,
    ):
        self._build = build
        self._jit = jit_compile
        self._allow_fallback = allow_fallback and jit_compile
        self._kind = kind
        self._forms: dict[bool, Callable] = {}
        self._succeeded = False

    @property
    def jit_compile(self) -> bool:
        return self._jit

    def _form(self, exact: bool) -> Callable:
        fn = self._forms.get(exact)
        if fn is None:
            fn = self._forms[exact] = self._build(self._jit, exact)
        return fn

    def tracing_count(self) -> int:
        """Traces so far, both forms together."""
        return sum(
            fn.experimental_get_tracing_count()
            for fn in self._forms.values()
            if hasattr(fn, "experimental_get_tracing_count")
        )

    def __call__(self, iterator, num_steps, exact: bool = False):
        """Runs up to `num_steps` steps; `exact`: the iterator holds at least that many."""
        fn = self._form(exact)
        if self._succeeded or not self._allow_fallback:
            out = fn(iterator, num_steps)
            self._succeeded = True
            return out
        try:
            out = fn(iterator, num_steps)
        except (
            tf.errors.InvalidArgumentError,
            tf.errors.UnimplementedError,
            tf.errors.InternalError,
        ) as e:
            if not any(m in str(e) for m in _XLA_FAILURE_MARKERS):
                raise
            log.warning(
                'jit_compile="auto": XLA could not compile the %s step (%s); running it '
                "without XLA from now on.",
                self._kind,
                str(e).splitlines()[0][:300],
            )
            self._jit = False
            self._allow_fallback = False
            self._forms.clear()
            raise XlaFallback() from e
        self._succeeded = True
        return out


def _step_fn(fn: Callable, jit: bool, run_eagerly: bool, autograph: bool = True) -> Callable:
    if run_eagerly:
        return fn
    if jit:
        return tf.function(fn, jit_compile=True, reduce_retracing=True, autograph=autograph)
    return fn


def _exact_loop(
    iterator: Any, num_steps: tf.Tensor, step: Callable, state: Any, parallel_iterations: int
) -> tuple[tf.Tensor, Any]:
    """`(num_steps, state)` after `state = step(iterator.get_next(), i, state)` for
    `i` in `range(num_steps)`: the iterator holds at least that many batches."""

    def body(i, state):
        return i + 1, step(iterator.get_next(), i, state)

    return tf.while_loop(
        lambda i, state: i < num_steps,
        body,
        (tf.constant(0, tf.int64), state),
        parallel_iterations=parallel_iterations,
    )


def _until_end_loop(
    iterator: Any, num_steps: tf.Tensor, step: Callable, state: Any, parallel_iterations: int
) -> tuple[tf.Tensor, Any]:
    """`(steps_run, state)` after up to `num_steps` steps, ending early on an empty Optional."""

    def cond(i, done, state):
        return tf.logical_and(tf.logical_not(done), i < num_steps)

    def body(i, done, state):
        optional = iterator.get_next_as_optional()

        def run():
            return i + 1, tf.constant(False), step(optional.get_value(), i, state)

        return tf.cond(optional.has_value(), run, lambda: (i, tf.constant(True), state))

    steps, _, state = tf.while_loop(
        cond,
        body,
        (tf.constant(0, tf.int64), tf.constant(False), state),
        parallel_iterations=parallel_iterations,
    )
    return steps, state


def _loop_of(exact: bool) -> Callable:
    return _exact_loop if exact else _until_end_loop


def _run_step(strategy: tf.distribute.Strategy, step: Callable, data: Any) -> Any:
    # A clean name scope: summaries written in the model get their own tags,
    # not "while/cond/...".
    with tf.compat.v1.name_scope(None):
        return strategy.run(step, args=(data,))


def make_step_loop(
    strategy: tf.distribute.Strategy,
    replica_fn: Callable,
    *,
    jit: bool,
    run_eagerly: bool,
    exact: bool = False,
    autograph: bool = True,
) -> Callable[[Any, tf.Tensor], tf.Tensor]:
    """`(iterator, num_steps) -> steps_run`: up to `num_steps` replica steps
    (exactly `num_steps` with `exact`, where the iterator must hold them).

    `autograph=False` traces the step as plain Python: for steps made only of
    code without Python control flow on tensors (the engine's own, Keras's).
    Autograph rewrites every function the step calls, once per process, which
    costs seconds of the first step in a fresh process (see module docstring).
    """
    step = _step_fn(replica_fn, jit, run_eagerly, autograph)
    run_loop = _loop_of(exact)

    def train_or_test(data, i, state):
        _run_step(strategy, step, data)
        return state

    def loop(iterator, num_steps):
        steps, _ = run_loop(iterator, num_steps, train_or_test, (), 1)
        return steps

    return loop if run_eagerly else _traced(loop, autograph)


def _traced(loop: Callable, autograph: bool) -> Callable:
    """The compiled loop: one trace per iterator spec.

    No `reduce_retracing`: a trace generalised over several inputs' specs (a
    Python source's relaxed `[None, None]` among them) hands the replicas whose
    data ended first (a worker of a cluster, or the last replicas of a step)
    dummy batches of that relaxed shape, `[0, 0]`, which the network cannot
    take: a two-worker predict crashed so. One trace per spec keeps them
    `[0, features]`; a run sees few distinct specs (fresh iterators over the
    same data have equal ones).
    """
    return tf.function(loop, autograph=autograph)


def _all_gather(ctx: tf.distribute.ReplicaContext, value: tf.Tensor) -> tf.Tensor:
    """All-gather along the batch; collectives carry no bools, so those travel as int32."""
    if value.dtype == tf.bool:
        return tf.cast(ctx.all_gather(tf.cast(value, tf.int32), axis=0), tf.bool)
    return ctx.all_gather(value, axis=0)


def _gathering(replica_fn: Callable, with_sizes: bool) -> Callable:
    """`replica_fn` whose outputs are all-gathered across the workers' replicas, with
    each replica's row count when the blocks must be reordered afterwards."""

    def gathered(data):
        outputs = replica_fn(data)
        ctx = tf.distribute.get_replica_context()
        every = tf.nest.map_structure(lambda o: _all_gather(ctx, o), outputs)
        if not with_sizes:
            return every, ()
        rows = tf.shape(tf.nest.flatten(outputs)[0], out_type=tf.int32)[:1]
        return every, ctx.all_gather(rows, axis=0)

    return gathered


def _local_outputs(
    strategy: tf.distribute.Strategy, outputs: Any, order: tuple[int, ...], gathered: bool
) -> Any:
    """One step's per-replica outputs as one tensor per leaf, rows in input order.

    `gathered` (several worker processes): every replica holds the whole global
    batch, replica after replica, with the replicas' row counts. Otherwise this
    client's replicas are all there is, one tensor each.
    """
    first = lambda value: strategy.experimental_local_results(value)[0]  # noqa: E731
    if gathered:
        values, sizes = outputs
        local = tf.nest.map_structure(first, values)
        if predict_order.is_identity(order):
            return local
        sizes = first(sizes)
        return tf.nest.map_structure(lambda v: predict_order.reorder_rows(v, sizes, order), local)
    return tf.nest.map_structure(
        lambda o: predict_order.concat_in_order(strategy.experimental_local_results(o), order),
        outputs,
    )


def _output_arrays(dtypes: Any, size: tf.Tensor | None) -> Any:
    """One TensorArray per output leaf: `size` steps, or growing (until the data ends)."""
    if size is None:
        make = lambda dtype: tf.TensorArray(  # noqa: E731
            dtype, size=0, dynamic_size=True, infer_shape=False
        )
    else:
        make = lambda dtype: tf.TensorArray(  # noqa: E731
            dtype, size=tf.cast(size, tf.int32), infer_shape=False
        )
    return tf.nest.map_structure(make, dtypes)


def _concat_arrays(arrays: Any, steps: tf.Tensor, exact: bool) -> Any:
    """Each leaf's steps in one array; an until-end execution may have run none."""
    if exact:
        return tf.nest.map_structure(lambda ta: ta.concat(), arrays)
    return tf.nest.map_structure(
        lambda ta: tf.cond(steps > 0, ta.concat, lambda: tf.zeros([0], ta.dtype)), arrays
    )


class _PredictByLayout:
    """The predict loop, traced once per output order.

    The order depends on how the iterator's input was distributed
    (`predict_order.input_kind`), which the loop reads from the eager
    iterator before calling the traced function of that order. On a single
    input worker both kinds give the identity and share one function.
    """

    def __init__(self, strategy: tf.distribute.Strategy, build: Callable[[tuple], Callable]):
        self._strategy = strategy
        self._build = build
        self._orders: dict[str, tuple[int, ...]] = {}
        self._loops: dict[tuple[int, ...], Callable] = {}

    def __call__(self, iterator: Any, num_steps: tf.Tensor) -> Any:
        kind = predict_order.input_kind(iterator)
        order = self._orders.get(kind)
        if order is None:
            order = self._orders[kind] = predict_order.output_order(self._strategy, kind)
        loop = self._loops.get(order)
        if loop is None:
            loop = self._loops[order] = self._build(order)
        return loop(iterator, num_steps)

    def experimental_get_tracing_count(self) -> int:
        return sum(
            fn.experimental_get_tracing_count()
            for fn in self._loops.values()
            if hasattr(fn, "experimental_get_tracing_count")
        )


def make_predict_loop(
    strategy: tf.distribute.Strategy,
    replica_fn: Callable,
    output_structure: Any,
    *,
    jit: bool,
    run_eagerly: bool,
    exact: bool = False,
    autograph: bool = True,
) -> Callable[[Any, tf.Tensor], tuple[tf.Tensor, Any]]:
    """`(iterator, num_steps) -> (steps_run, outputs)`, outputs gathered in the graph.

    Each step's per-replica outputs are put in input order (engine/predict_order.py:
    replica order on one input worker; several input workers, a TPU pod's hosts or
    the workers of a cluster, hold their pieces of a batch interleaved when the
    strategy split it) and written to a TensorArray; one execution returns one
    concatenated array per output leaf. Across workers (MultiWorkerMirroredStrategy)
    the outputs are all-gathered, so every worker returns every prediction.
    `exact`, `autograph`: as in `make_step_loop`.
    """
    gathered = distribute.is_multi_worker(strategy)
    dtypes = tf.nest.map_structure(lambda spec: spec.dtype, output_structure)
    run_loop = _loop_of(exact)

    def build(order: tuple[int, ...]) -> Callable:
        fn = replica_fn
        if gathered:
            fn = _gathering(replica_fn, with_sizes=not predict_order.is_identity(order))
        step = _step_fn(fn, jit, run_eagerly, autograph)

        def predict_one(data, i, arrays):
            local = _local_outputs(strategy, _run_step(strategy, step, data), order, gathered)
            return tf.nest.map_structure(
                lambda ta, value: ta.write(tf.cast(i, tf.int32), value), arrays, local
            )

        def loop(iterator, num_steps):
            arrays = _output_arrays(dtypes, num_steps if exact else None)
            steps, arrays = run_loop(
                iterator, num_steps, predict_one, arrays, _PREDICT_PARALLEL_ITERATIONS
            )
            return steps, _concat_arrays(arrays, steps, exact)

        return loop if run_eagerly else _traced(loop, autograph)

    return _PredictByLayout(strategy, build)
