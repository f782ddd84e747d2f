"""Unit tests of `engine/stepper.py`: the one execution loop of fit, evaluate and predict.

The compiled function is replaced by a fake that records what it was asked
and returns what a test scripts (steps that ran, or an error), over an
adapter whose properties (exact, repeating, changing shape) each test sets.
The loops' behaviour end to end is covered by test_execution.py,
test_data_sources.py, test_static_shapes.py and test_fault_tolerance.py.
"""

from __future__ import annotations

import pytest
import tensorflow as tf

from tfk_trainer.data.base import DataAdapter
from tfk_trainer.engine import loop, stepper
from tfk_trainer.engine.execution import XlaFallback
from tfk_trainer.engine.stepper import EpochPlan, Iterators, Stepper
from tfk_trainer.engine.tuning import ExecutionLengths, StepsPerExecutionTuner


class _Adapter(DataAdapter):
    """An adapter whose iterators are plain labels: ("it", epoch, skip, n-th made)."""

    def __init__(self, batches=10, *, exact=True, repeat=False, changes_spec=False):
        self.batches = batches
        self.exact = exact
        self.repeat = repeat
        self.changes_spec = changes_spec
        self.spec_change_pending = False
        self.made: list[tuple] = []
        self.pending_error: Exception | None = None

    def get_dataset(self, *, repeat: bool = False, first_epoch: int = 0) -> tf.data.Dataset:
        raise AssertionError("not used: `distribute` is overridden")

    def distribute(self, strategy, *, repeat=False, first_epoch=0, skip=0, **_):
        label = ("it", first_epoch, skip, len(self.made))
        self.made.append(label)
        return [label]  # iter() of it is the "iterator" the fake function receives

    @property
    def num_batches(self):
        return self.batches

    @property
    def exact_batches(self) -> bool:
        return self.exact

    @property
    def can_repeat(self) -> bool:
        return self.repeat

    @property
    def can_change_spec(self) -> bool:
        return self.changes_spec

    @property
    def spec_changed(self) -> bool:
        changed, self.spec_change_pending = self.spec_change_pending, False
        return changed

    def raise_pending_error(self) -> None:
        if self.pending_error is not None:
            raise self.pending_error


class _Count:
    """A step count that fails the test if the stepper reads it (a host sync)."""

    def __init__(self, value: int):
        self.value = value
        self.read = False

    def __int__(self) -> int:
        self.read = True
        return self.value


class _Function:
    """Records `(requested, exact)` per call; `script` gives each call's steps that ran
    (None: all of them), `("shape", n)` (n steps, then the source's batches changed
    shape) or an exception to raise."""

    def __init__(self, script=(), outputs=False, adapter=None):
        self.script = list(script)
        self.adapter = adapter
        self.calls: list[tuple[int, bool]] = []
        self.counts: list[_Count] = []
        self.outputs = outputs

    def __call__(self, iterator, steps, exact):
        requested = int(steps)
        self.calls.append((requested, exact))
        what = self.script.pop(0) if self.script else None
        if isinstance(what, BaseException):
            raise what
        if isinstance(what, tuple):
            self.adapter.spec_change_pending = True
            what = what[1]
        count = _Count(requested if what is None else what)
        self.counts.append(count)
        return (count, f"outputs{len(self.calls)}") if self.outputs else count


def _stepper(adapter, function, *, steps=None, spe=4, persistent=None, **options):
    plan = EpochPlan.create(adapter, steps, "steps")
    if persistent is not None:
        plan.persistent = persistent
    iterators = Iterators(tf.distribute.get_strategy(), plan, 0)
    lengths = ExecutionLengths(spe, can_fold=False)
    return Stepper(function, iterators, lengths, options.pop("tuner", None), **options)


def _run_epoch(s: Stepper, epoch: int = 0, start: int = 0) -> list[tuple[int, int]]:
    s.start_epoch(epoch)
    before: list[int] = []
    done = [(step, ran) for step, ran, _ in s.executions(start, before.append)]
    assert len(before) >= len(done)
    return done


def test_loop_re_exports_the_names_others_import():
    assert loop.EpochPlan is stepper.EpochPlan
    assert loop.Iterators is stepper.Iterators


def test_lengths_are_capped_at_the_steps_left_and_the_count_is_not_read():
    adapter = _Adapter(batches=10)
    function = _Function()
    s = _stepper(adapter, function)
    assert _run_epoch(s) == [(4, 4), (8, 4), (10, 2)]
    assert function.calls == [(4, True), (4, True), (2, True)]
    # Array-like data holds exactly the batches asked for: no host sync per execution.
    assert not s.reads_count
    assert not any(c.read for c in function.counts)
    assert not s.ended


def test_before_hook_sees_the_step_each_execution_starts_at():
    s = _stepper(_Adapter(batches=10), _Function())
    s.start_epoch(0)
    seen: list[int] = []
    list(s.executions(0, seen.append))
    assert seen == [0, 4, 8]


def test_intervals_cut_training_executions_and_count_global_steps():
    function = _Function()
    s = _stepper(_Adapter(batches=12), function, intervals=[5])
    assert s.has_intervals
    s.start_epoch(0, global_step=3)
    steps = [step for step, _, _ in s.executions(0, lambda step: None)]
    # From global step 3: cut at 5, then 4 (to 9), 1 (to 10), 4 (to 14), 1 (to 15).
    assert [r for r, _ in function.calls] == [2, 4, 1, 4, 1]
    assert steps == [2, 6, 7, 11, 12]
    assert s.global_step == 15


def test_data_of_unknown_length_reads_the_count_and_ends():
    adapter = _Adapter(batches=None, exact=False)
    function = _Function(script=[None, 3])
    s = _stepper(adapter, function)
    assert s.reads_count
    assert _run_epoch(s) == [(4, 4), (7, 3)]
    assert s.ended
    assert all(c.read for c in function.counts)
    assert function.calls == [(4, False), (4, False)]


def test_an_execution_that_ran_nothing_at_the_end_is_not_yielded():
    adapter = _Adapter(batches=None, exact=False)
    s = _stepper(adapter, _Function(script=[None, 0]))
    assert _run_epoch(s) == [(4, 4)]
    assert s.ended


def test_a_persistent_iterator_over_data_that_does_not_repeat_reads_the_count():
    adapter = _Adapter(batches=6, exact=True, repeat=False)
    function = _Function(script=[None, 2])
    s = _stepper(adapter, function, steps=10)  # steps_per_epoch: persistent
    assert s.plan.persistent and s.reads_count
    assert not s.iterators.exact  # the compiled function checks for the end of the data
    assert _run_epoch(s) == [(4, 4), (6, 2)]
    assert s.ended


def test_a_repeating_persistent_iterator_needs_no_count():
    adapter = _Adapter(batches=6, exact=True, repeat=True)
    s = _stepper(adapter, _Function(), steps=10)
    assert not s.reads_count and s.iterators.exact
    assert _run_epoch(s) == [(4, 4), (8, 4), (10, 2)]
    assert len(adapter.made) == 1
    s.start_epoch(1)
    assert len(adapter.made) == 1  # the same iterator for every epoch


def test_a_change_of_shape_continues_on_a_new_iterator():
    adapter = _Adapter(batches=10, exact=False, changes_spec=True)
    # 4 steps; 1 (then the shape changed: a new iterator); 0 (the shape changed again
    # before any batch: not yielded, not the end); then the rest.
    function = _Function(script=[None, ("shape", 1), ("shape", 0)], adapter=adapter)
    s = _stepper(adapter, function)
    assert s.reads_count
    assert _run_epoch(s) == [(4, 4), (5, 1), (9, 4), (10, 1)]
    assert not s.ended
    assert [label[3] for label in adapter.made] == [0, 1, 2]


def test_the_end_of_the_data_is_not_a_change_of_shape():
    adapter = _Adapter(batches=10, exact=False, changes_spec=True)
    s = _stepper(adapter, _Function(script=[None, 1], adapter=adapter))
    assert _run_epoch(s) == [(4, 4), (5, 1)]
    assert s.ended and len(adapter.made) == 1


def test_xla_fallback_restarts_the_epoch_on_a_fresh_iterator():
    adapter = _Adapter(batches=8)
    restarts: list[int] = []
    function = _Function(script=[XlaFallback()])
    s = _stepper(adapter, function, on_restart=lambda: restarts.append(1))
    assert _run_epoch(s) == [(4, 4), (8, 4)]
    assert restarts == [1]
    assert len(adapter.made) == 2
    assert len(function.calls) == 3


def test_xla_fallback_after_steps_ran_propagates():
    """A resumed epoch starts part-way: its steps cannot be run again from the start."""
    s = _stepper(_Adapter(batches=8), _Function(script=[XlaFallback()]))
    s.start_epoch(0)
    with pytest.raises(XlaFallback):
        list(s.executions(3, lambda step: None))


def test_a_python_producers_error_surfaces_as_itself():
    adapter = _Adapter(batches=8)
    adapter.pending_error = KeyError("from the generator")
    s = _stepper(adapter, _Function(script=[tf.errors.UnknownError(None, None, "op failed")]))
    with pytest.raises(KeyError, match="from the generator"):
        _run_epoch(s)


def test_an_op_error_without_a_producer_error_is_raised_unchanged():
    s = _stepper(_Adapter(batches=8), _Function(script=[tf.errors.InternalError(None, None, "x")]))
    with pytest.raises(tf.errors.InternalError):
        _run_epoch(s)


def test_predict_always_reads_the_count_and_yields_outputs():
    function = _Function(outputs=True)
    s = _stepper(_Adapter(batches=6), function, returns_outputs=True)
    assert s.reads_count
    s.start_epoch(0)
    out = [(step, o) for step, _, (_, o) in s.executions(0, lambda step: None)]
    assert out == [(4, "outputs1"), (6, "outputs2")]


def test_a_measuring_tuner_reads_the_count_to_time_steps():
    tuner = StepsPerExecutionTuner(probes=1)
    function = _Function()
    s = _stepper(_Adapter(batches=10), function, spe=1, tuner=tuner)
    assert not s.reads_count
    s.start_epoch(0)
    gen = s.executions(0, lambda step: None)
    next(gen), next(gen)  # the first execution is skipped (tracing), the second timed
    assert tuner.tuned
    assert function.counts[0].read and function.counts[1].read


def test_leaving_the_loop_stops_running_executions():
    function = _Function()
    s = _stepper(_Adapter(batches=20), function)
    s.start_epoch(0)
    for step, _, _ in s.executions(0, lambda step: None):
        if step >= 8:
            break
    assert len(function.calls) == 2
