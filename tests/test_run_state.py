"""The run state (engine/run_state.py) and the layering it makes possible.

A callback receives the run's `RunState` before any hook; a Keras callback
works without it; the training position and a resume point round-trip
through it; `fit` closes its adapters when its setup fails; and no module
outside the model's own reads the model's private attributes.
"""

from __future__ import annotations

import ast
import pathlib
import re

import keras
import numpy as np
import pytest

import tfk_trainer as tfk
from tfk_trainer.data import python_sources
from tfk_trainer.engine import loop, run_state
from tfk_trainer.engine.run_state import EngineState, Position, RunState

PACKAGE = pathlib.Path(tfk.__file__).parent
# The model's own modules: Model itself and the engine modules that build and run it.
MODEL_MODULES = {
    "model.py",
    "model_surface.py",
    "saving.py",
    "engine/build.py",
    "engine/fit_run.py",
    "engine/runs.py",
}


def _data(n: int = 32):
    rng = np.random.default_rng(0)
    x = rng.random((n, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True).astype("float32")
    return x, y


def _model() -> tfk.Model:
    model = tfk.Model(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


class _Recorder(tfk.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen: list[tuple] = []
        self.epochs: list[int] = []

    def on_train_begin(self, logs=None):
        state = self.run_state
        self.seen.append(("train_begin", state.mode, state.position.epoch, state.position.step))

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)

    def on_epoch_end(self, epoch, logs=None):
        p = self.run_state.position
        self.seen.append(("epoch_end", p.epoch, p.step))

    def on_test_begin(self, logs=None):
        self.seen.append(("test_begin", self.run_state.mode))


def test_callback_sees_the_run_state_of_each_run():
    x, y = _data()
    model = _model()
    rec = _Recorder()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[rec])
    assert isinstance(rec.run_state, RunState)
    # 32 samples in batches of 8: 4 steps; a finished epoch moves the position on.
    assert rec.seen == [("train_begin", "fit", 0, 0), ("epoch_end", 1, 0), ("epoch_end", 2, 0)]
    assert rec.run_state.executor is model._executor
    assert rec.run_state.steps_per_execution == 1
    fit_state = rec.run_state
    model.evaluate(x, y, batch_size=8, verbose=0, callbacks=[rec])
    assert rec.seen[-1] == ("test_begin", "evaluate")
    assert rec.run_state is not fit_state  # one state per run


def test_keras_callback_works_without_run_state():
    x, y = _data()
    model = _model()
    epochs: list[int] = []
    cb = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epochs.append(epoch))
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[cb])
    assert epochs == [0, 1]
    assert len(history.history["loss"]) == 2


class _ResumeAt(tfk.callbacks.Callback):
    """Asks the run to resume at a position, as BackupAndRestore does after a restore."""

    def __init__(self, position: Position):
        super().__init__()
        self.position = position

    def on_train_begin(self, logs=None):
        self.run_state.resume_from = self.position


def test_resume_point_round_trips_through_the_run_state():
    x, y = _data()
    model = _model()
    rec = _Recorder()
    resume = _ResumeAt(Position(epoch=2, step=0, first_epoch=2))
    history = model.fit(x, y, batch_size=8, epochs=4, verbose=0, callbacks=[resume, rec])
    assert rec.epochs == [2, 3]
    assert len(history.history["loss"]) == 2
    assert resume.run_state.resume_from is None  # read once, then cleared
    p = resume.run_state.position
    assert (p.epoch, p.step, p.consumed, p.first_epoch) == (4, 0, 8, 2)
    assert int(model.optimizer.iterations.numpy()) == 8


def test_backup_position_round_trip(tmp_path):
    x, y = _data()
    backup = str(tmp_path / "backup")
    model = _model()
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        shuffle=False,
        callbacks=[tfk.callbacks.BackupAndRestore(backup, delete_checkpoint=False)],
    )
    resumed = _model()
    rec = _Recorder()
    resumed.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        verbose=0,
        shuffle=False,
        callbacks=[tfk.callbacks.BackupAndRestore(backup, delete_checkpoint=False), rec],
    )
    assert rec.epochs == [2]
    assert int(resumed.optimizer.iterations.numpy()) == 12
    assert rec.run_state.position.epoch == 3


def test_position_lives_in_the_leaf_module():
    assert loop.Position is run_state.Position
    from tfk_trainer.callbacks import checkpoint

    assert checkpoint.Position is run_state.Position


def test_engine_state_is_skipped_by_the_variable_walk():
    x, y = _data()
    model = _model()
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert isinstance(model._state, EngineState)
    # The network's kernel and bias only: no optimizer slots, no metric variables.
    assert len(model.variables) == 2
    assert [m.name for m in model.metrics] == ["loss", "mae"]


class _Batches(tfk.data.PyDataset):
    def __init__(self):
        super().__init__(workers=2)
        self.x, self.y = _data()

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.x[i * 8 : (i + 1) * 8], self.y[i * 8 : (i + 1) * 8]


@pytest.mark.parametrize(
    "bad, error",
    [
        ({"callbacks": 5}, TypeError),
        ({"validation_data": "not data"}, ValueError),
        ({"validation_data": _Batches(), "validation_steps": 0}, ValueError),
        ({"steps_per_epoch": 0}, ValueError),
    ],
)
def test_fit_closes_adapters_when_its_setup_fails(monkeypatch, bad, error):
    closed: list = []
    original = python_sources.PyDatasetAdapter.close

    def spy(self):
        closed.append(self)
        original(self)

    monkeypatch.setattr(python_sources.PyDatasetAdapter, "close", spy)
    model = _model()
    with pytest.raises(error):
        model.fit(_Batches(), epochs=1, verbose=0, **bad)
    made = 2 if "validation_steps" in bad else 1
    assert len(closed) == made
    assert len({id(a) for a in closed}) == made


def _sources() -> list[tuple[str, str]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        out.append((path.relative_to(PACKAGE).as_posix(), path.read_text()))
    return out


def test_no_module_reads_the_models_private_attributes():
    pattern = re.compile(r"model\._[a-z]|getattr\([^,]*model[^,]*, \"_[a-z]")
    offenders = [
        f"{name}:{i}: {line.strip()}"
        for name, text in _sources()
        if name not in MODEL_MODULES
        for i, line in enumerate(text.splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def _runtime_imports(text: str) -> list[str]:
    """Modules imported by `text` outside `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(text)
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            guarded.update(id(inner) for inner in ast.walk(node))
    modules = []
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.append(node.module)
        elif isinstance(node, ast.Import):
            modules.extend(a.name for a in node.names)
    return modules


def test_engine_modules_do_not_import_callbacks():
    """Only the run builders (fit_run, runs) make callback lists; the driver and the
    step maths receive them, so the engine never imports the callbacks back."""
    builders = {"engine/fit_run.py", "engine/runs.py"}
    offenders = [
        f"{name}: {module}"
        for name, text in _sources()
        if name.startswith("engine/") and name not in builders
        for module in _runtime_imports(text)
        if module.startswith("tfk_trainer.callbacks")
    ]
    assert offenders == []


def test_run_state_is_a_leaf():
    ours = [
        m
        for m in _runtime_imports((PACKAGE / "engine/run_state.py").read_text())
        if m.startswith("tfk_trainer")
    ]
    assert ours == ["tfk_trainer.engine.logs"]
    logs = _runtime_imports((PACKAGE / "engine/logs.py").read_text())
    assert [m for m in logs if m.startswith("tfk_trainer")] == []
