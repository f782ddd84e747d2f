"""Building a run: the strategy, the data, the optimizer, the compiled model, its inputs.

Shared by every mode of the binary: `train` builds and fits, the others build
the same model and restore a checkpoint into it (`_restore`).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

import tfk_trainer as tfk
from tfk_trainer import compile as compile_lib
from tfk_trainer import registry
from tfk_trainer.train import data as data_lib
from tfk_trainer.train import summary as summary_lib
from tfk_trainer.train.validation import ConfigError

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
