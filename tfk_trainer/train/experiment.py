"""Builds the model from a resolved config and runs one mode.

`model_dir` layout:

    config.json           the resolved config (train modes, chief only)
    backup/               BackupAndRestore (a rerun of the same command resumes)
    checkpoints/          ckpt-<step>, every epoch or every N steps, and at the end
    logs/                 TensorBoard: HParams, train/, validation/, eval/ (the test split),
                          all at the optimizer step (see tfk_trainer.train.logs)
    export/               the SavedModel (serving_default)
    summary.json          train modes: history, test results, times, steps
    eval_results.json     evaluate: the latest checkpoint's test results
    eval_results.jsonl    continuous_evaluate: one line per checkpoint
    predictions.npy       predict: outputs for the test split
    TRAINING_DONE         written last by a finished training run
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import tfk_trainer as tfk
from tfk_trainer import compile as compile_lib
from tfk_trainer import paths as paths_lib
from tfk_trainer import registry
from tfk_trainer.export import move_tree
from tfk_trainer.train import checkpoints as ckpt_lib
from tfk_trainer.train import data as data_lib
from tfk_trainer.train import logs as logs_lib
from tfk_trainer.train import summary as summary_lib
from tfk_trainer.train.config import TRAIN_MODES, to_dict
from tfk_trainer.train.validation import ConfigError

EXIT_OK = 0
EXIT_BELOW_BAR = 1  # test accuracy below eval.min_accuracy, or continuous_evaluate timed out
EXIT_USAGE = 2


@dataclass
class Paths:
    model_dir: str

    def __getattr__(self, name: str) -> str:
        names = {
            "config": "config.json",
            "backup": "backup",
            "checkpoints": "checkpoints",
            "logs": "logs",
            "export": "export",
            "summary": "summary.json",
            "eval_results": "eval_results.json",
            "eval_stream": "eval_results.jsonl",
            "predictions": "predictions.npy",
        }
        if name not in names:
            raise AttributeError(name)
        return os.path.join(self.model_dir, names[name])


# -- checks before anything runs ---------------------------------------------


def _config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _config_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def _training_part(config: Any) -> dict[str, Any]:
    """The keys that decide what training produces (a finished run is compared on them)."""
    config = config if isinstance(config, dict) else to_dict(config)
    return {
        "model": config.get("model"),
        "data": config.get("data"),
        "train": config.get("train"),
        "seed": (config.get("runtime") or {}).get("seed"),
    }


def _read_json(path: str) -> Any:
    try:
        with tf.io.gfile.GFile(path) as f:
            return json.loads(f.read())
    except (OSError, ValueError, tf.errors.OpError):
        return None


def precheck(config: Any, model_dir: str, mode: str) -> None:
    """Mode-specific checks that need no data or TensorFlow work; raises ConfigError."""
    paths = Paths(model_dir)
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise ConfigError([f"--model_dir {model_dir!r} exists and is not a directory."])
    # Every mode writes there (checkpoints, results, predictions): fail now, not
    # after the data is loaded or an epoch is trained.
    problem = paths_lib.creatable_problem(model_dir)
    if problem is not None:
        raise ConfigError(
            [f"--model_dir {model_dir!r} cannot be created or written: {problem[1]}."]
        )
    if mode in TRAIN_MODES:
        done = ckpt_lib.read_done_marker(model_dir)
        if done and done.get("config") is not None:
            diffs = _config_differences(_training_part(done["config"]), _training_part(config))
            if diffs:
                raise ConfigError(
                    [
                        f"--model_dir {model_dir!r} holds a finished training run with a "
                        f"different config ({'; '.join(diffs[:5])}). Use a new --model_dir, or "
                        "delete this one to start over."
                    ]
                )
        previous = _read_json(paths.config)
        if os.path.isdir(paths.backup) and previous is not None:
            diffs = _config_differences(previous.get("model"), to_dict(config)["model"], "model.")
            if diffs:
                raise ConfigError(
                    [
                        f"--model_dir {model_dir!r} holds an interrupted run (backup/) of a "
                        f"different model ({'; '.join(diffs[:5])}), which cannot resume. Rerun "
                        "with the same model config, or use a new --model_dir."
                    ]
                )
    elif mode != "continuous_evaluate" and ckpt_lib.latest(paths.checkpoints) is None:
        raise ConfigError(
            [
                f"--mode={mode} needs a checkpoint, and {paths.checkpoints!r} has none. Train "
                "first (--mode=train or train_and_evaluate with the same --model_dir)."
            ]
        )


# -- building ----------------------------------------------------------------


def setup_runtime(config: Any) -> tf.distribute.Strategy:
    runtime = config.runtime
    keras.utils.set_random_seed(runtime.seed)
    if runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = "float32" if runtime.mixed_precision == "none" else runtime.mixed_precision
    keras.config.set_dtype_policy(policy)
    try:
        return tfk.distribute.resolve(runtime.strategy, tpu=runtime.tpu or None)
    except (ValueError, RuntimeError) as e:
        raise ConfigError([f"runtime.strategy {runtime.strategy!r}: {e}"]) from e


def load_data(config: Any) -> data_lib.Splits:
    entry = registry.get_dataset(config.data.name)
    splits = entry.fn(config.data)
    if not isinstance(splits, data_lib.Splits):
        raise TypeError(
            f"dataset {config.data.name!r} must return tfk_trainer.train.data.Splits; it "
            f"returned {type(splits).__name__}."
        )
    splits.train = data_lib.limit(splits.train, config.data.max_train_samples)
    splits.test = data_lib.limit(splits.test, config.data.max_test_samples)
    return splits


def _steps_per_epoch(config: Any, splits: data_lib.Splits) -> int | None:
    """Optimizer steps per epoch (for the LR schedule), None when unknown."""
    if config.train.steps_per_epoch:
        return config.train.steps_per_epoch
    if data_lib.is_arrays(splits.train):
        n = len(splits.train[0])
        if splits.validation is None:  # the engine keeps floor(n * (1 - split)) for training
            n = int(math.floor(n * (1.0 - config.data.validation_split)))
        return max(1, math.ceil(n / config.train.batch_size))
    cardinality = int(splits.train.cardinality().numpy())
    if cardinality < 0:
        return None
    return max(1, math.ceil(cardinality / config.train.batch_size))


def make_optimizer(config: Any, steps_per_epoch: int | None) -> keras.optimizers.Optimizer:
    train = config.train
    learning_rate: Any = train.learning_rate
    if train.lr_schedule == "cosine":
        if steps_per_epoch is None:
            raise ConfigError(
                [
                    "train.lr_schedule 'cosine' needs the number of steps, but the training "
                    "data's size is unknown; set train.steps_per_epoch."
                ]
            )
        learning_rate = keras.optimizers.schedules.CosineDecay(
            train.learning_rate, decay_steps=steps_per_epoch * train.epochs
        )
    kwargs: dict[str, Any] = {"learning_rate": learning_rate}
    if train.weight_decay:
        kwargs["weight_decay"] = train.weight_decay
    if train.clipnorm:
        kwargs["global_clipnorm"] = train.clipnorm
    return compile_lib.OPTIMIZERS[train.optimizer](**kwargs)


def build_model(
    config: Any, splits: data_lib.Splits, strategy: tf.distribute.Strategy
) -> tfk.Model:
    """The compiled `tfk.Model`, built under the strategy's scope."""
    entry = registry.get_model(config.model.name)
    jit = {"auto": "auto", "true": True, "false": False}[config.runtime.jit_compile]
    with strategy.scope():
        try:
            network = entry.fn(config.model, tuple(splits.input_shape), int(splits.num_classes))
        except Exception as e:
            raise ConfigError(
                [f"model.name {config.model.name!r}: building the model failed: {e}"]
            ) from e
        if not callable(network):
            raise ConfigError(
                [
                    f"model.name {config.model.name!r}: the builder returned "
                    f"{type(network).__name__}, not a keras.Model."
                ]
            )
        model = tfk.Model(
            network,
            static_shapes=config.runtime.static_shapes,
            static_remainder=config.runtime.static_remainder,
        )
        try:
            model.compile(
                optimizer=make_optimizer(config, _steps_per_epoch(config, splits)),
                loss=config.train.loss,
                metrics=list(config.train.metrics),
                steps_per_execution=config.train.steps_per_execution,
                jit_compile=jit,
            )
        except ConfigError:
            raise
        except (ValueError, TypeError) as e:
            raise ConfigError(
                [f"train.loss / train.metrics / train.optimizer were rejected by compile(): {e}"]
            ) from e
    return model


def _verbose(config: Any) -> str | int:
    value = config.runtime.verbose
    return value if value == "auto" else int(value)


def _batched(dataset: tf.data.Dataset, batch_size: int, shuffle_seed: int | None = None):
    if shuffle_seed is not None:
        dataset = dataset.shuffle(10_000, seed=shuffle_seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _test_inputs(config: Any, splits: data_lib.Splits) -> dict[str, Any]:
    """evaluate()/predict() arguments for the test split."""
    steps = config.eval.steps or None
    if data_lib.is_arrays(splits.test):
        return {
            "x": splits.test[0],
            "y": splits.test[1],
            "batch_size": config.eval.batch_size,
            "steps": steps,
        }
    return {"x": _batched(splits.test, config.eval.batch_size), "steps": steps}


def evaluate_test(model: tfk.Model, config: Any, splits: data_lib.Splits) -> dict[str, float]:
    results = model.evaluate(**_test_inputs(config, splits), return_dict=True, verbose=0)
    return summary_lib.to_jsonable(results)


def _restore(
    model: tfk.Model, splits: data_lib.Splits, path: str, include_optimizer: bool = False
) -> None:
    """Loads a checkpoint (by default not the optimizer) and builds the predict path."""
    model.load_checkpoint(path, include_optimizer=include_optimizer)
    sample = splits.test[0][:1] if data_lib.is_arrays(splits.test) else None
    if sample is None:
        for x, _ in splits.test.take(1):
            sample = x[None, ...]
    model.predict_on_batch(sample)  # records the input signature export() needs


def export_model(model: tfk.Model, paths: Paths, strategy: Any) -> str:
    """Writes the SavedModel to model_dir/export, replacing an older one.

    Staged next to it and swapped in with `tf.io.gfile` renames (any file system), so
    a reader sees the old export or the new one, and the directories get the
    permissions the umask gives (a serving process may run as another user).
    """
    final = paths.export
    staging = os.path.join(paths.model_dir, f".export-staging-{os.getpid()}")
    model.export(staging, verbose=False)  # the binary logs the final path itself
    if not tfk.distribute.is_chief(strategy):
        return final
    old = None
    if tf.io.gfile.exists(final):
        old = os.path.join(paths.model_dir, f".export-old-{os.getpid()}")
        move_tree(final, old)
    move_tree(staging, final)
    if old:
        tf.io.gfile.rmtree(old)
    return final


def _check_bar(config: Any, results: dict[str, Any] | None) -> tuple[int, str | None]:
    """`(exit status, PASSED/FAILED line)` for eval.min_accuracy (no line when it is 0)."""
    bar = config.eval.min_accuracy
    if not bar or results is None:
        return EXIT_OK, None
    accuracy = summary_lib.accuracy_of(results)
    if accuracy is None:
        return (
            EXIT_BELOW_BAR,
            f"FAILED: eval.min_accuracy is {bar} but the results have no accuracy",
        )
    if accuracy < bar:
        return (
            EXIT_BELOW_BAR,
            f"FAILED: test accuracy {accuracy:.4f} is below eval.min_accuracy {bar:.4f}",
        )
    return EXIT_OK, f"PASSED: test accuracy {accuracy:.4f} >= eval.min_accuracy {bar:.4f}"


def _finish(summary: dict[str, Any], status_line: str | None) -> None:
    summary_lib.print_summary(summary)
    if status_line:
        print(status_line, file=sys.stderr if status_line.startswith("FAILED") else sys.stdout)
        sys.stdout.flush()


def _base_summary(config: Any, mode: str, model_dir: str, strategy: Any) -> dict[str, Any]:
    return {
        "mode": mode,
        "model": config.model.name,
        "data": config.data.name,
        "model_dir": os.path.abspath(model_dir),
        "strategy": config.runtime.strategy,
        "replicas": tfk.distribute.num_replicas(strategy),
        "mixed_precision": config.runtime.mixed_precision,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }


def _fit_arguments(config: Any, splits: data_lib.Splits) -> tuple[dict[str, Any], bool]:
    """`model.fit` keyword arguments for the data (no callbacks), and whether there is
    validation data."""
    kwargs: dict[str, Any] = {
        "epochs": config.train.epochs,
        "verbose": _verbose(config),
        "steps_per_epoch": config.train.steps_per_epoch or None,
    }
    if data_lib.is_arrays(splits.train):
        kwargs.update(
            x=splits.train[0],
            y=splits.train[1],
            batch_size=config.train.batch_size,
            shuffle=config.train.shuffle,
            validation_batch_size=config.eval.batch_size,
        )
        if splits.validation is None:
            kwargs["validation_split"] = config.data.validation_split
    else:
        seed = config.runtime.seed if config.train.shuffle else None
        kwargs["x"] = _batched(splits.train, config.train.batch_size, seed)
        if splits.validation is None and config.data.validation_split:
            logging.warning(
                "data.validation_split applies to array datasets only; dataset %r returned "
                "a tf.data.Dataset without validation data, so nothing is held out.",
                config.data.name,
            )
    if splits.validation is not None:
        validation = splits.validation
        if not data_lib.is_arrays(validation):
            validation = _batched(validation, config.eval.batch_size)
        kwargs["validation_data"] = validation
    has_validation = "validation_data" in kwargs or bool(kwargs.get("validation_split"))
    return kwargs, has_validation


def _train_callbacks(
    config: Any, paths: Paths, model: tfk.Model, saver: Any, has_validation: bool
) -> list[Any]:
    """Backup (first: it restores before the others look at the step), checkpoints,
    a resume notice, TensorBoard and optional early stopping."""
    callbacks: list[Any] = [
        tfk.callbacks.BackupAndRestore(
            paths.backup, save_freq=config.train.backup_every_steps or "epoch"
        ),
        saver,
        tfk.callbacks.LambdaCallback(on_train_begin=lambda logs: _announce_resume(model)),
        tfk.callbacks.TensorBoard(
            paths.logs,
            update_freq=config.train.tensorboard_every_steps or "epoch",
            epoch_axis="step",  # one x axis with batch scalars and the eval/ run
        ),
    ]
    if config.train.early_stopping_patience:
        callbacks.append(
            tfk.callbacks.EarlyStopping(
                monitor="val_loss" if has_validation else "loss",
                patience=config.train.early_stopping_patience,
            )
        )
    return callbacks


# -- modes -------------------------------------------------------------------


def train(config: Any, model_dir: str, mode: str, started: float) -> int:
    paths = Paths(model_dir)
    strategy = setup_runtime(config)
    chief = tfk.distribute.is_chief(strategy)
    done = ckpt_lib.read_done_marker(model_dir)
    already_done = bool(done) and ckpt_lib.latest(paths.checkpoints) is not None
    splits = load_data(config)
    print(
        f"data {config.data.name!r}: input shape {tuple(splits.input_shape)}, "
        f"{splits.num_classes} classes; model {config.model.name!r}; {mode} in {model_dir}",
        flush=True,
    )
    model = build_model(config, splits, strategy)
    # Written only once the data loaded and the model compiled, so a config that
    # fails there (an unknown loss, a model key its builder rejects) leaves nothing.
    if chief:
        tf.io.gfile.makedirs(model_dir)
    summary_lib.write_json(paths.config, to_dict(config), strategy)
    if not already_done:
        ckpt_lib.remove_done_marker(model_dir, strategy)
    saver = ckpt_lib.CheckpointSaver(
        paths.checkpoints, config.train.checkpoint_every_steps, config.train.checkpoints_to_keep
    )
    saver.set_model(model)
    if already_done:
        print(
            f"Training in {model_dir} is already complete (step {done.get('global_step')}); "
            "not training again. Delete the directory (or use another) to start over."
        )
        _restore(model, splits, ckpt_lib.latest(paths.checkpoints), include_optimizer=True)
        initial_step = int(model.optimizer.iterations.numpy())
        previous = _read_json(paths.summary) or {}
        history = previous.get("history") or {}
        train_seconds = 0.0  # this run trained nothing
        original_train_seconds = previous.get(
            "original_train_seconds", previous.get("train_seconds")
        )
    else:
        if chief:
            logs_lib.write_hparams(paths.logs, config)
        fit_kwargs, has_validation = _fit_arguments(config, splits)
        fit_kwargs["callbacks"] = _train_callbacks(config, paths, model, saver, has_validation)
        fit_started = time.perf_counter()
        history = model.fit(**fit_kwargs).history
        train_seconds = time.perf_counter() - fit_started
        original_train_seconds = train_seconds
        initial_step = saver.initial_step
    checkpoint = saver.save()
    saver.close()
    export_dir = export_model(model, paths, strategy)
    test = evaluate_test(model, config, splits) if mode == "train_and_evaluate" else None
    global_step = int(model.optimizer.iterations.numpy())
    if test is not None and chief and not already_done:
        writer = logs_lib.evaluation_writer(paths.logs)
        logs_lib.write_evaluation(writer, test, global_step)
        writer.close()
    summary = _base_summary(config, mode, model_dir, strategy)
    summary.update(
        {
            "global_step": global_step,
            "resumed_from_step": initial_step,
            "already_complete": already_done,
            "epochs": config.train.epochs,
            "epochs_run": len(next(iter(history.values()), [])),
            "batch_size": config.train.batch_size,
            "steps_per_execution": config.train.steps_per_execution,
            "history": summary_lib.to_jsonable(history),
            "final_train": {k: v[-1] for k, v in summary_lib.to_jsonable(history).items() if v},
            "test": test,
            "test_accuracy": summary_lib.accuracy_of(test) if test else None,
            "min_accuracy": config.eval.min_accuracy,
            "train_seconds": train_seconds,  # this run's fit (0 when already complete)
            "original_train_seconds": original_train_seconds,  # the run that trained
            "wall_seconds": time.perf_counter() - started,
            "checkpoint": checkpoint,
            "export_dir": export_dir,
            "summary_path": paths.summary,
        }
    )
    status, line = _check_bar(config, test)
    summary["passed"] = status == EXIT_OK
    summary_lib.write_json(paths.summary, summary, strategy)
    ckpt_lib.write_done_marker(
        model_dir,
        {"checkpoint": checkpoint, "global_step": global_step, "config": to_dict(config)},
        strategy,
    )
    _finish(summary, line)
    return status


def _announce_resume(model: tfk.Model) -> None:
    step = int(model.optimizer.iterations.numpy())
    if step:
        print(f"Resumed from the backup at step {step}.", flush=True)


def _built_model(config: Any):
    strategy = setup_runtime(config)
    splits = load_data(config)
    model = build_model(config, splits, strategy)
    return strategy, splits, model


def _restored_model(config: Any, model_dir: str):
    """The model of `config`, restored from the latest checkpoint in `model_dir`."""
    paths = Paths(model_dir)
    strategy, splits, model = _built_model(config)
    path = ckpt_lib.latest(paths.checkpoints)
    _restore(model, splits, path)
    return paths, strategy, splits, model, path


def evaluate(config: Any, model_dir: str, started: float) -> int:
    paths, strategy, splits, model, path = _restored_model(config, model_dir)
    results = evaluate_test(model, config, splits)
    summary = _base_summary(config, "evaluate", model_dir, strategy)
    summary.update(
        {
            "checkpoint": path,
            "global_step": ckpt_lib.step_of(path),
            "test": results,
            "test_accuracy": summary_lib.accuracy_of(results),
            "wall_seconds": time.perf_counter() - started,
            "summary_path": paths.eval_results,
        }
    )
    status, line = _check_bar(config, results)
    summary["passed"] = status == EXIT_OK
    summary_lib.write_json(paths.eval_results, summary, strategy)
    _finish(summary, line)
    return status


def continuous_evaluate(config: Any, model_dir: str, started: float) -> int:
    """Evaluates each new checkpoint until the training-done marker appears."""
    paths = Paths(model_dir)
    strategy, splits, model = _built_model(config)
    chief = tfk.distribute.is_chief(strategy)
    writer = logs_lib.evaluation_writer(paths.logs) if chief else None
    timeout, poll = config.eval.continuous_timeout, config.eval.poll_interval
    last_path, last_results, evaluated = None, None, 0
    waiting_since = time.monotonic()
    print(f"continuous_evaluate: watching {paths.checkpoints} (timeout {timeout:g}s)", flush=True)
    while True:
        done = ckpt_lib.read_done_marker(model_dir)  # read first: it follows the final checkpoint
        path = ckpt_lib.latest(paths.checkpoints)
        if path and path != last_path:
            try:
                _restore(model, splits, path)
            except (FileNotFoundError, tf.errors.NotFoundError, ValueError) as e:
                logging.warning("checkpoint %s could not be read yet (%s); retrying", path, e)
                time.sleep(poll)
                continue
            results = evaluate_test(model, config, splits)
            step = ckpt_lib.step_of(path)
            record = {"checkpoint": path, "global_step": step, "test": results, "time": time.time()}
            if chief:
                os.makedirs(model_dir, exist_ok=True)
                with open(paths.eval_stream, "a") as f:
                    f.write(json.dumps(summary_lib.to_jsonable(record)) + "\n")
                logs_lib.write_evaluation(writer, results, step or 0)
            print(f"evaluated {os.path.basename(path)}: {results}", flush=True)
            last_path, last_results, evaluated = path, results, evaluated + 1
            waiting_since = time.monotonic()
            continue
        if done is not None:
            break
        if time.monotonic() - waiting_since > timeout:
            print(
                f"continuous_evaluate: no new checkpoint in {paths.checkpoints} for {timeout:g}s "
                f"and no {ckpt_lib.DONE_MARKER} marker: giving up after {evaluated} evaluation(s).",
                flush=True,
            )
            return EXIT_BELOW_BAR
        time.sleep(poll)
    summary = _base_summary(config, "continuous_evaluate", model_dir, strategy)
    summary.update(
        {
            "checkpoint": last_path,
            "global_step": ckpt_lib.step_of(last_path or ""),
            "evaluations": evaluated,
            "test": last_results,
            "wall_seconds": time.perf_counter() - started,
            "summary_path": paths.eval_stream,
        }
    )
    status, line = _check_bar(config, last_results)
    _finish(summary, line)
    return status


def predict(config: Any, model_dir: str, started: float) -> int:
    paths, strategy, splits, model, path = _restored_model(config, model_dir)
    inputs = _test_inputs(config, splits)
    inputs.pop("y", None)
    if not data_lib.is_arrays(splits.test):
        inputs["x"] = inputs["x"].map(lambda x, y: x)
    predictions = model.predict(**inputs, verbose=0)
    if tfk.distribute.is_chief(strategy):
        os.makedirs(model_dir, exist_ok=True)
        with tf.io.gfile.GFile(paths.predictions, "wb") as f:
            np.save(f, np.asarray(predictions))
    summary = _base_summary(config, "predict", model_dir, strategy)
    summary.update(
        {
            "checkpoint": path,
            "global_step": ckpt_lib.step_of(path),
            "predictions": f"{paths.predictions} (shape {np.shape(predictions)})",
            "wall_seconds": time.perf_counter() - started,
        }
    )
    _finish(summary, None)
    return EXIT_OK


def export(config: Any, model_dir: str, started: float) -> int:
    paths, strategy, splits, model, path = _restored_model(config, model_dir)
    export_dir = export_model(model, paths, strategy)
    summary = _base_summary(config, "export", model_dir, strategy)
    summary.update(
        {
            "checkpoint": path,
            "global_step": ckpt_lib.step_of(path),
            "export_dir": export_dir,
            "wall_seconds": time.perf_counter() - started,
        }
    )
    _finish(summary, None)
    return EXIT_OK


def run(mode: str, config: Any, model_dir: str, started: float) -> int:
    if mode in TRAIN_MODES:
        return train(config, model_dir, mode, started)
    runner = {
        "evaluate": evaluate,
        "continuous_evaluate": continuous_evaluate,
        "predict": predict,
        "export": export,
    }[mode]
    return runner(config, model_dir, started)
