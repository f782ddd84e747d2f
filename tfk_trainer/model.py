"""`tfk_trainer.Model`: the Keras `Model` training API on our own engine.

A `Model` wraps any callable network (a Keras 3 layer or model, a
`tf.Module`, a Sonnet module) or is subclassed with `call(inputs,
training=False)`. It is a `tf.Module`, so `tf.train.Checkpoint` tracks the
network and the optimizer, and it finds variables of Keras layers and of
`tf.Module`s alike (a plain `tf.Module` does not see Keras variables).

The override points are Keras's: `train_step`, `test_step`, `predict_step`
run once per replica per step; `compute_loss` and `compute_metrics` are
called from them.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfk_trainer.callbacks.history import History
from tfk_trainer.data import static as static_lib
from tfk_trainer.data import structure
from tfk_trainer.engine import build, fit_run, replica, runs
from tfk_trainer.engine import variables as variables_lib
from tfk_trainer.engine.run_state import EngineState
from tfk_trainer.engine.tuning import ExecutionLengths
from tfk_trainer.model_surface import ModelSurface, SequentialSurface


class Model(ModelSurface, tf.Module):
    """The Keras training API (`compile`, `fit`, `evaluate`, `predict`, `*_on_batch`).

    Args:
        network: the callable to train: a Keras layer or model, a `tf.Module`
            or a Sonnet module. Omit it when subclassing and implementing `call`.
        name: optional module name.
        static_shapes: every batch the same shape (what TPUs need). None (the
            default) turns it on under TPUStrategy only. Training then drops
            or wraps the last partial batch (`static_remainder`), and
            `evaluate`/`predict` pad it and ignore the padding, so their
            results equal the dynamic-shape ones.
        static_remainder: "drop" (skip the last partial training batch) or
            "wrap" (complete it with samples from the start of the epoch;
            array inputs only).
    """

    def __init__(
        self,
        network: Any = None,
        *,
        name: str | None = None,
        static_shapes: bool | None = None,
        static_remainder: str = "drop",
    ):
        super().__init__(name=name)
        if static_shapes not in (None, True, False):
            raise ValueError(
                f"`static_shapes` must be None (on under TPUStrategy), True or False; "
                f"received {static_shapes!r}."
            )
        self.static_shapes = static_shapes
        self.static_remainder = static_lib.check_mode(static_remainder)
        if network is not None and not callable(network):
            raise TypeError(
                "`network` must be callable (a Keras layer/model, a tf.Module with "
                f"__call__, or a Sonnet module); received {type(network).__name__}."
            )
        self.network = network
        # The engine's state (compile config, objectives, trackers, compiled
        # functions) in one plain object that the variable walk skips by type.
        self._state = EngineState()
        self.optimizer = None
        self.stop_training = False
        self.stop_evaluating = False  # set by a callback: evaluate stops after the batch
        self.stop_predicting = False  # set by a callback: predict stops after the batch
        self.history = None
        # Longer executions when no callback watches every batch (engine/tuning.py).
        self.fold_executions = True
        self._state.execution_lengths = ExecutionLengths()
        self._network_takes_training = build.network_takes_training(network)

    # -- forward -------------------------------------------------------------

    def call(self, inputs: Any, training: bool = False) -> Any:
        """The forward pass; override it when subclassing without a network.

        Args:
            inputs: The batch's inputs.
            training: Whether the call is for training (dropout and the like).

        Returns:
            The outputs of the wrapped network.
        """
        if self.network is None:
            raise NotImplementedError(
                "tfk_trainer.Model has no network: pass one (`tfk.Model(net)`) or subclass "
                "Model and implement `call(self, inputs, training=False)`."
            )
        if self._network_takes_training:
            return self.network(inputs, training=training)
        return self.network(inputs)

    def __call__(self, inputs: Any, training: bool = False, **kwargs: Any) -> Any:
        # As Keras: `training` reaches `call` only when its signature takes it
        # (many Keras docs write `call(self, x)`); other keyword arguments pass through.
        if build.call_takes_training(type(self)):
            kwargs["training"] = training
        return self.call(inputs, **kwargs)

    # -- variables -----------------------------------------------------------

    def _walk(self) -> tuple[list, list, list]:
        """Keras layers, bare tf.Variables and Keras metrics reachable from the model."""
        return variables_lib.walk(self)

    @property
    def trainable(self) -> bool:
        """Whether the model's variables are trained (Keras's `Model.trainable`)."""
        return self.__dict__.get("_trainable", True)

    @trainable.setter
    def trainable(self, value: bool) -> None:
        # As Keras: every layer follows (the wrapped network, or a subclass's
        # layers); the next fit trains with the new set, no compile() needed.
        self.__dict__["_trainable"] = bool(value)
        for layer in variables_lib.walk(self)[0]:
            layer.trainable = bool(value)

    def _collect_variables(self) -> tuple[list, list]:
        trainable, non_trainable, layers, metrics = build.collect_variables(self)
        self._state.user_metrics = metrics
        self._state.layers = layers
        return trainable, non_trainable

    @property
    def trainable_variables(self) -> list:
        if self._state.network_built:
            return list(self._state.trainable)
        return self._collect_variables()[0]

    @property
    def non_trainable_variables(self) -> list:
        if self._state.network_built:
            return list(self._state.non_trainable)
        return self._collect_variables()[1]

    @property
    def variables(self) -> list:
        return self.trainable_variables + self.non_trainable_variables

    @property
    def weights(self) -> list:
        """Keras's name for `variables`."""
        return self.variables

    @property
    def trainable_weights(self) -> list:
        """Keras's name for `trainable_variables`."""
        return self.trainable_variables

    @property
    def non_trainable_weights(self) -> list:
        """Keras's name for `non_trainable_variables`."""
        return self.non_trainable_variables

    def get_weights(self) -> list[np.ndarray]:
        """The values of `variables` as NumPy arrays (trainable ones first)."""
        return [np.array(v.numpy()) for v in self.variables]

    def set_weights(self, weights: list) -> None:
        """Assigns `weights` to `variables`, in the order of `get_weights()`.

        Args:
            weights: A list of arrays, one per variable, each of the
                variable's shape. A wrong count or shape raises a `ValueError`.
        """
        variables = self.variables
        if len(weights) != len(variables):
            raise ValueError(
                f"`set_weights` expects {len(variables)} arrays (one per variable); received {len(weights)}."
            )
        for v, w in zip(variables, weights):
            if tuple(v.shape) != tuple(np.shape(w)):
                raise ValueError(
                    f"Weight shape mismatch for variable {v.name}: expected {tuple(v.shape)}, "
                    f"received {np.shape(w)}."
                )
            v.assign(w)

    def add_weight(
        self,
        shape: Any = (),
        initializer: Any = "zeros",
        dtype: Any = None,
        trainable: bool = True,
        name: str | None = None,
        **kwargs: Any,
    ) -> keras.Variable:
        """A variable held by the model (Keras's `Model.add_weight`).

        Created now, under the strategy in scope, and found with the model's
        other variables: trained when `trainable`, saved in checkpoints. State
        a callback updates between batches (a counter, a schedule) lives here.

        Args:
            shape: The variable's shape (a scalar by default).
            initializer: A Keras initializer or its name (`"zeros"` by default).
            dtype: The dtype; the global float type by default.
            trainable: Whether the optimizer trains it.
            name: An optional name.
            **kwargs: Keras's other `add_weight` arguments (`regularizer`,
                `constraint`, `aggregation`, ...) are passed to `keras.Variable`
                where it takes them.

        Returns:
            The new `keras.Variable`.
        """
        initializer = keras.initializers.get(initializer)
        accepted = {k: v for k, v in kwargs.items() if k in ("aggregation", "synchronization")}
        variable = keras.Variable(
            initializer,
            shape=shape,
            dtype=dtype or keras.config.floatx(),
            trainable=trainable,
            name=name or "variable",
            **accepted,
        )
        if "_added_weights" not in self.__dict__:
            self._added_weights = []  # tracked: checkpoints save it
        self._added_weights.append(variable)
        if self._state.network_built:
            build.refresh_trainable(self)
        return variable

    @property
    def losses(self) -> list:
        """Regularization and `add_loss` losses of the Keras layers, from the last call."""
        layers = self._state.layers if self._state.network_built else self._walk()[0]
        out = []
        for layer in layers:
            out.extend(layer.losses)
        return out

    # -- compile -------------------------------------------------------------

    @property
    def distribute_strategy(self) -> tf.distribute.Strategy:
        """The strategy the model runs under: the one in scope at `compile()` (or at the first call)."""
        return self._state.strategy or tf.distribute.get_strategy()

    @property
    def compiled(self) -> bool:
        """Whether `compile()` has been called."""
        return self._state.compile_config is not None

    def compile(
        self,
        optimizer: str | keras.optimizers.Optimizer = "rmsprop",
        loss: Any = None,
        loss_weights: Any = None,
        metrics: Any = None,
        weighted_metrics: Any = None,
        run_eagerly: bool = False,
        steps_per_execution: int | str = 1,
        jit_compile: bool | str = "auto",
        auto_scale_loss: bool = True,
    ) -> None:
        """Configures the model for training.

        The arguments are those of `keras.Model.compile` in the Keras 3 API
        docs. Build and compile under `strategy.scope()` to train under a
        strategy, exactly as with Keras; the strategy in scope here is the one
        `fit`, `evaluate` and `predict` use. Bad values raise a `ValueError` or
        `TypeError` naming the argument (see docs/errors.md).

        Example:

        ```python
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=1e-3),
            loss=keras.losses.BinaryCrossentropy(),
            metrics=[keras.metrics.BinaryAccuracy(), keras.metrics.FalseNegatives()],
        )
        ```

        Args:
            optimizer: String (name of optimizer) or optimizer instance. See
                `keras.optimizers`.
            loss: Loss function. May be a string (name of loss function), a
                `keras.losses.Loss` instance, or any callable
                `loss = fn(y_true, y_pred)` returning a float tensor; or a
                list/dict of those, one per model output. `y_true` should have
                shape `(batch_size, d0, .. dN)` (sparse losses such as sparse
                categorical crossentropy take integers of shape
                `(batch_size, d0, .. dN-1)`); `y_pred` has shape
                `(batch_size, d0, .. dN)`. Per-output losses are divided by the
                global batch, so they add up to the total on a partial last
                batch and under any number of replicas.
            loss_weights: Optional list or dict of scalar coefficients (Python
                floats) weighting each output's loss; the minimized loss is the
                weighted sum. A list maps 1:1 to the outputs, a dict maps output
                names to coefficients.
            metrics: List of metrics evaluated during training and testing:
                strings (names of built-in metrics), functions
                `result = fn(y_true, y_pred)` or `keras.metrics.Metric`
                instances; for several outputs a dict such as
                `{'a': 'accuracy', 'b': ['accuracy', 'mse']}` or a list of
                lists. `'accuracy'`/`'acc'` become binary, categorical or sparse
                categorical accuracy from the shapes of the targets and
                outputs, as do `"crossentropy"` and `"ce"` (which Keras 3
                does not resolve). These metrics ignore sample weights.
            weighted_metrics: List of metrics evaluated and weighted by
                `sample_weight` or `class_weight` during training and testing.
            run_eagerly: Bool. If `True`, the steps run eagerly (no
                `tf.function`): slow, for debugging.
            steps_per_execution: Int, or `"auto"` (tfk_trainer only: tuned
                from the measured step time). The number of batches run in
                one compiled call (a `tf.while_loop`); at most one epoch per
                call. Batch callbacks are called once per call, with true step
                indices (see docs/differences.md). When no callback needs every
                batch boundary, calls may run more steps than this (the same
                steps in the same order; `model.fold_executions = False`
                turns it off).
            jit_compile: Bool or `"auto"`. Whether the steps are XLA-compiled.
                `"auto"`: always under TPUStrategy; off for multi-replica
                GPU/CPU strategies and on CPU-only hosts; on for a single GPU,
                falling back with one warning if the model does not compile.
            auto_scale_loss: Bool. If `True` and the dtype policy is
                `"mixed_float16"`, the optimizer is wrapped in a
                `keras.optimizers.LossScaleOptimizer`, which scales the loss
                dynamically to prevent underflow.
        """
        self.optimizer = build.configure(
            self._state,
            mixed_float16=build.uses_mixed_float16(self),
            optimizer=optimizer,
            loss=loss,
            loss_weights=loss_weights,
            metrics=metrics,
            weighted_metrics=weighted_metrics,
            run_eagerly=run_eagerly,
            steps_per_execution=steps_per_execution,
            jit_compile=jit_compile,
            auto_scale_loss=auto_scale_loss,
        )

    def _require_compiled(self, method: str) -> None:
        if self._state.compile_config is None:
            raise RuntimeError(
                f"You must call `compile()` before `{method}()`: the model has no optimizer, "
                "loss or metrics yet."
            )

    @property
    def _executor(self) -> Any:
        """The compiled functions (engine/build.py's `Executor`)."""
        return self._state.executor

    @property
    def _execution_lengths(self) -> ExecutionLengths:
        return self._state.execution_lengths

    @property
    def _compile_config(self) -> Any:
        return self._state.compile_config

    def _custom_train_step(self) -> bool:
        return type(self).train_step is not Model.train_step

    def _calls_nothing(self) -> bool:
        """No network and no `call` override, but a custom `train_step` (a GAN):
        there is no forward pass to build or compile losses against."""
        return (
            self.network is None
            and type(self).call is Model.call
            and type(self).__call__ is Model.__call__
            and self._custom_train_step()
        )

    def _custom_compute_loss(self) -> bool:
        return type(self).compute_loss is not Model.compute_loss

    def _standard_steps(self) -> bool:
        """No custom train/test step or compute_loss: targets reach the compiled losses as given."""
        cls = type(self)
        return (
            cls.train_step is Model.train_step
            and cls.test_step is Model.test_step
            and cls.compute_loss is Model.compute_loss
        )

    # -- metrics -------------------------------------------------------------

    @property
    def metrics(self) -> list:
        """The loss trackers and compiled metrics (Keras `Metric` objects)."""
        if not self._state.built:
            return []
        return build.metric_objects(self._state)

    @property
    def metrics_names(self) -> list[str]:
        """The names of `evaluate()`'s list, in its order (Keras gets this wrong)."""
        if not self._state.built:
            return []
        return build.metrics_names(self._state)

    @property
    def metrics_by_name(self) -> dict[str, Any]:
        """Every metric under the name it is logged as (tfk_trainer's own; for callbacks
        that need a metric's direction, such as `mode="auto"`)."""
        if not self._state.built:
            return {}
        return build.metrics_by_name(self._state)

    def reset_metrics(self) -> None:
        """Resets the state of every metric (the loss trackers included)."""
        for m in self.metrics:
            m.reset_state()

    def _model_output_names(self) -> list[str] | None:
        names = getattr(self.network, "output_names", None) if self.network is not None else None
        return list(names) if names else None

    def _step_context(self) -> replica.StepContext:
        """What the standard step maths need (engine/replica.py), made explicit."""
        state = self._state
        return replica.StepContext(
            objectives=state.objectives,
            loss_tracker=state.loss_tracker,
            output_trackers=state.output_trackers,
            optimizer=self.optimizer,
            layer_losses=lambda: self.losses,
        )

    # -- override points (run per replica) -----------------------------------

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> tf.Tensor:
        """This replica's share of the batch loss (compiled losses plus layer losses).

        Summed over replicas it is the batch loss: each output's loss is
        divided by the global number of elements, and the regularization
        losses by the number of replicas. An override that returns a plain
        per-replica mean is scaled for distribution (Keras multiplies the
        gradients by the number of replicas instead).

        Args:
            x: The batch's inputs.
            y: The batch's targets (structure matching the outputs).
            y_pred: The model's outputs for `x`.
            sample_weight: Optional per-sample weights for the loss.
            training: Whether the step is a training step.

        Returns:
            A scalar float tensor.
        """
        self._state.base_compute_loss_calls += 1
        loss, _, _ = replica.loss_terms(self._step_context(), x, y, y_pred, sample_weight)
        return loss

    def compute_metrics(
        self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None
    ) -> dict[str, Any]:
        """Updates the compiled metrics for one batch; returns every metric's result.

        `metrics` are updated unweighted and `weighted_metrics` with
        `sample_weight`, as Keras does.

        Args:
            x: The batch's inputs.
            y: The batch's targets.
            y_pred: The model's outputs for `x`.
            sample_weight: Optional per-sample weights, for `weighted_metrics`.

        Returns:
            `get_metrics_result()`, as Keras's `compute_metrics`.
        """
        replica.update_compiled_metrics(self._step_context(), y, y_pred, sample_weight, None)
        return self.get_metrics_result()

    def _update_metrics(self, ctx: replica.StepContext, y, y_pred, sample_weight, valid) -> None:
        """Calls a `compute_metrics` override, or updates the compiled metrics directly."""
        if type(self).compute_metrics is not Model.compute_metrics:
            weights = replica.with_padding_weights(sample_weight, valid)
            self.compute_metrics(None, y, y_pred, weights)
            return
        replica.update_compiled_metrics(ctx, y, y_pred, sample_weight, valid)

    def _loss_for_step(
        self, ctx: replica.StepContext, x, y, y_pred, sample_weight, valid=None, training=True
    ) -> tuple[tf.Tensor, tf.Tensor, list | None]:
        """The compiled loss terms, or a `compute_loss` override's result made a share."""
        if type(self).compute_loss is Model.compute_loss:
            return replica.loss_terms(ctx, x, y, y_pred, sample_weight, valid)
        sample_weight = replica.with_padding_weights(sample_weight, valid)
        calls = self._state.base_compute_loss_calls
        # Keras's older `compute_loss(x, y, y_pred, sample_weight)` has no `training`.
        extra = {"training": training} if build.compute_loss_takes_training(type(self)) else {}
        loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, **extra)
        plain_mean = self._state.base_compute_loss_calls == calls
        loss, global_batch = replica.custom_loss_share(loss, x, valid, plain_mean)
        return loss, global_batch, None

    def _engine_step(self, mode: str) -> tuple[Any, bool]:
        """`(replica function, overridden)` for the compiled `mode` ("train"/"test")
        loop: the default step's body (which reads no results), or the override."""
        if mode == "train":
            custom = self._custom_train_step()
            return (self.train_step if custom else self._default_train_step), custom
        custom = type(self).test_step is not Model.test_step
        return (self.test_step if custom else self._default_test_step), custom

    def get_metrics_result(self) -> dict[str, Any]:
        """Every metric's current result, keyed by its log name (as Keras's)."""
        if not self._state.built:
            return {}
        return build.metric_values(self._state)

    def train_step(self, data: Any) -> dict[str, Any]:
        """One replica's training step: forward, loss, gradients, update, metrics.

        Override it, as in Keras, to customise training; `fit` and
        `train_on_batch` call it inside their compiled loop. As in Keras, it
        returns the logs (`get_metrics_result()`), so an override may return
        `super().train_step(data)`. What an override returns is what `fit`
        logs and `History` records: a dict keyed by the model's metric names
        is read from those metrics after the execution; any other dict (plain
        values, other names) is logged as the last step returned it.

        Args:
            data: One batch as the data yields it: `x`, `(x,)`, `(x, y)` or
                `(x, y, sample_weight)` (unpack it with
                `keras.utils.unpack_x_y_sample_weight`).

        Returns:
            The metrics' results after this step, keyed by log name.
        """
        self._default_train_step(data)
        return self.get_metrics_result()

    def _default_train_step(self, data: Any) -> None:
        """`train_step` without reading the results (what the engine runs by default)."""
        data, valid = structure.split_padding(data)
        x, y, sample_weight = structure.unpack_x_y_sample_weight(data)
        variables = self._state.trainable
        ctx = self._step_context()
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss, global_batch, shares = self._loss_for_step(
                ctx, x, y, y_pred, sample_weight, valid
            )
            scaled = replica.scale_loss(self.optimizer, loss)
        grads = tape.gradient(scaled, variables)
        replica.apply_gradients(self.optimizer, grads, variables)
        replica.track_loss(ctx, loss, global_batch, x, valid, shares)
        self._update_metrics(ctx, y, y_pred, sample_weight, valid)

    def test_step(self, data: Any) -> dict[str, Any]:
        """One replica's evaluation step: forward, loss, metrics.

        Override it, as in Keras, to customise evaluation (`evaluate`,
        validation in `fit`, `test_on_batch`). Its returned logs are used
        as `train_step`'s are.

        Args:
            data: One batch: `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`.

        Returns:
            The metrics' results after this step, keyed by log name.
        """
        self._default_test_step(data)
        return self.get_metrics_result()

    def _default_test_step(self, data: Any) -> None:
        """`test_step` without reading the results (what the engine runs by default)."""
        data, valid = structure.split_padding(data)
        x, y, sample_weight = structure.unpack_x_y_sample_weight(data)
        ctx = self._step_context()
        y_pred = self(x, training=False)
        loss, global_batch, shares = self._loss_for_step(
            ctx, x, y, y_pred, sample_weight, valid, False
        )
        replica.track_loss(ctx, loss, global_batch, x, valid, shares)
        self._update_metrics(ctx, y, y_pred, sample_weight, valid)

    def predict_step(self, data: Any) -> Any:
        """One replica's prediction step.

        Override it, as in Keras, to customise `predict` and
        `predict_on_batch`.

        Args:
            data: One batch: `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`;
                only `x` is used by default.

        Returns:
            The model's outputs for the batch (`self(x, training=False)`).
        """
        x, _, _ = structure.unpack_x_y_sample_weight(data)
        return self(x, training=False)

    def _predict_replica(self, data: Any) -> tuple[Any, tf.Tensor]:
        """`(outputs, valid rows)`: the driver drops padded rows."""
        return replica.predict_replica(self.predict_step, data)

    # -- fit / evaluate / predict --------------------------------------------

    def fit(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int | None = None,
        epochs: int = 1,
        verbose: int | str = "auto",
        callbacks: list | None = None,
        validation_split: float = 0.0,
        validation_data: Any = None,
        shuffle: bool | str = True,
        class_weight: dict | None = None,
        sample_weight: Any = None,
        initial_epoch: int = 0,
        steps_per_epoch: int | None = None,
        validation_steps: int | None = None,
        validation_batch_size: int | None = None,
        validation_freq: int = 1,
    ) -> History:
        """Trains the model for a fixed number of epochs (dataset iterations).

        As Keras's `Model.fit` in the Keras 3 API docs, on tfk_trainer's own
        engine; where it differs on purpose, see docs/differences.md.

        Args:
            x: Input data. It could be:
                - A NumPy array (or array-like: pandas, SciPy sparse), or a list
                  of arrays (in case the model has multiple inputs).
                - A tensor, or a list of tensors (in case the model has
                  multiple inputs).
                - A dict mapping input names to the corresponding
                  arrays/tensors, if the model has named inputs.
                - A `tf.data.Dataset` of batches. Should return a tuple of
                  either `(inputs, targets)` or `(inputs, targets, sample_weights)`.
                - A `keras.utils.PyDataset` or `tfk.data.PyDataset`, a Python
                  generator, or a callable returning a fresh generator per epoch,
                  yielding `(inputs, targets)` or `(inputs, targets, sample_weights)`.
            y: Target data: NumPy array(s) or tensor(s), like `x`. Not given
                when `x` is a dataset, generator or PyDataset (the targets come
                from `x`).
            batch_size: Integer or `None`. Number of samples per gradient
                update; 32 if unspecified. Ignored, with a warning, for
                datasets, generators and PyDatasets (they make their own batches).
            epochs: Integer. The index of the final epoch: training runs from
                `initial_epoch` until the epoch of index `epochs` is reached.
                An epoch is one pass over the data, or `steps_per_epoch` steps.
            verbose: `"auto"`, 0, 1, or 2. 0 = silent, 1 = progress bar,
                2 = one line per epoch. `"auto"` is 1 when stdout is a terminal
                and 2 otherwise (Keras: 1).
            callbacks: List of callbacks (`tfk.callbacks` or
                `keras.callbacks.Callback` instances) called during training.
                `History` and `ProgbarLogger` are added automatically.
            validation_split: Float between 0 and 1. The fraction of the
                training arrays set apart (the last samples, before shuffling)
                and evaluated at the end of each epoch. Array inputs only.
                `validation_data` overrides it.
            validation_data: Data evaluated at the end of each epoch (not
                trained on): a tuple `(x_val, y_val)` or
                `(x_val, y_val, val_sample_weights)` of arrays or tensors, a
                `tf.data.Dataset`, a Python generator or a PyDataset. Its
                inputs are checked against the model before training starts.
            shuffle: `True`, `False` or `"batch"`. Whether to shuffle array
                training data before each epoch (`"batch"`: shuffle the order
                of batches only). Ignored for datasets and generators.
            class_weight: Optional dict mapping class indices (integers) to a
                weight (float), applied to the loss during training. For
                targets of rank 2 or more, `y` must be one-hot or have an
                explicit final dimension of 1 for sparse labels.
            sample_weight: Optional array of weights for the training samples
                (flat, one per sample, or `(samples, sequence_length)` for
                temporal data), applied to the loss and to `weighted_metrics`.
                For datasets and generators, yield it as the third element.
            initial_epoch: Integer. The epoch at which to start training (to
                resume an earlier run).
            steps_per_epoch: Integer, -1 or `None`. The number of steps
                (batches) in an epoch. `None`: the size of the data, or until a
                dataset is exhausted. Required for an infinitely repeating
                dataset; -1 runs indefinitely. Finite data that ends earlier
                ends the epoch there, and the next epoch starts a fresh pass. tfk_trainer runs exactly this
                many optimizer steps per epoch (Keras rounds up to a multiple
                of `steps_per_execution`).
            validation_steps: Integer or `None`. The number of validation
                batches per validation run; `None`: until `validation_data` is
                exhausted. With a partly consumed dataset, each validation run
                starts from the beginning, so the same samples are used.
            validation_batch_size: Integer or `None`. Samples per validation
                batch; defaults to `batch_size`. Not given for datasets or
                PyDatasets.
            validation_freq: Integer. Validate every `validation_freq` epochs.

        Returns:
            A `History` object whose `history` attribute maps each loss and
            metric name (and `val_` ones) to its value at each epoch.
        """
        self._require_compiled("fit")
        # keras.config.set_max_epochs / set_max_steps_per_epoch (debugging caps).
        epochs = build.capped_epochs(epochs)
        steps_per_epoch = build.capped_steps(steps_per_epoch)
        if validation_data is not None or validation_split:
            validation_steps = build.capped_steps(validation_steps)
        return fit_run.run_fit(
            self,
            x=x,
            y=y,
            batch_size=batch_size,
            epochs=epochs,
            verbose=verbose,
            callbacks=callbacks,
            validation_split=validation_split,
            validation_data=validation_data,
            shuffle=shuffle,
            class_weight=class_weight,
            sample_weight=sample_weight,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_steps=validation_steps,
            validation_batch_size=validation_batch_size,
            validation_freq=validation_freq,
        )

    def evaluate(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int | None = None,
        verbose: int | str = "auto",
        sample_weight: Any = None,
        steps: int | None = None,
        callbacks: list | None = None,
        return_dict: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Returns the loss value and metric values of the model in test mode.

        Computed in batches, as Keras's `Model.evaluate` in the Keras 3 API
        docs. Under `static_shapes`, the last batch is padded and the padding
        ignored, so the results are exact.

        Args:
            x: Input data. It could be:
                - A NumPy array (or array-like: pandas, SciPy sparse), or a list
                  of arrays (in case the model has multiple inputs).
                - A tensor, or a list of tensors (in case the model has
                  multiple inputs).
                - A dict mapping input names to the corresponding
                  arrays/tensors, if the model has named inputs.
                - A `tf.data.Dataset` of batches. Should return a tuple of
                  either `(inputs, targets)` or `(inputs, targets, sample_weights)`.
                - A `keras.utils.PyDataset` or `tfk.data.PyDataset`, a Python
                  generator, or a callable returning a fresh generator per epoch,
                  yielding `(inputs, targets)` or `(inputs, targets, sample_weights)`.
            y: Target data: NumPy array(s) or tensor(s), like `x`. Not given
                when `x` is a dataset, generator or PyDataset.
            batch_size: Integer or `None`. Samples per batch; 32 if
                unspecified. Not given for datasets, generators or PyDatasets.
            verbose: `"auto"`, 0, 1, or 2. 0 = silent, 1 = progress bar,
                2 = single line. `"auto"` is 1 when stdout is a terminal and 2
                otherwise.
            sample_weight: Optional array of weights for the test samples
                (flat, or `(samples, sequence_length)` for temporal data).
                For datasets, yield it as the third element of `x`.
            steps: Integer or `None`. The number of batches to evaluate;
                `None`: until the data is exhausted.
            callbacks: List of callbacks called during evaluation.
            return_dict: If `True`, the loss and metric results are returned
                as a dict keyed by name; if `False`, as a list (a scalar when
                there is only the loss) in the order of `metrics_names`.
            **kwargs: Accepted only to match Keras's signature: any keyword
                argument here raises a `TypeError` naming it.

        Returns:
            The scalar test loss (single output, no metrics), a list of
            scalars, or a dict (`return_dict=True`).
        """
        if kwargs:
            raise TypeError(
                f"evaluate() got unexpected keyword arguments {sorted(kwargs)}; accepted: x, y, "
                "batch_size, verbose, sample_weight, steps, callbacks, return_dict."
            )
        self._require_compiled("evaluate")
        steps = build.capped_steps(steps)
        logs = runs.run_evaluate(
            self,
            x=x,
            y=y,
            batch_size=batch_size,
            verbose=verbose,
            sample_weight=sample_weight,
            steps=steps,
            callbacks=callbacks,
        )
        return runs.format_results(self, logs, return_dict)

    def predict(
        self,
        x: Any,
        batch_size: int | None = None,
        verbose: int | str = "auto",
        steps: int | None = None,
        callbacks: list | None = None,
    ) -> Any:
        """Generates output predictions for the input samples.

        Computed in batches, for large inputs, as Keras's `Model.predict` in
        the Keras 3 API docs; for a few inputs that fit in one batch, calling
        the model (`model(x)`) is faster. Outputs are gathered in input order
        (also across replicas and workers), and nested and dict outputs keep
        their structure. `compile()` is not needed.

        Args:
            x: Input samples: a NumPy array (or array-like) or a list of them,
                a tensor or a list of tensors, a dict of them for named inputs,
                a `tf.data.Dataset`, a PyDataset, a Python generator, or a
                callable returning a generator.
            batch_size: Integer or `None`. Samples per batch; 32 if
                unspecified. Not given for datasets, generators or PyDatasets.
            verbose: `"auto"`, 0, 1, or 2. 0 = silent, 1 = progress bar,
                2 = single line. `"auto"` is 1 when stdout is a terminal and 2
                otherwise.
            steps: Integer or `None`. The number of batches to predict;
                `None`: until the data is exhausted.
            callbacks: List of callbacks called during prediction.

        Returns:
            NumPy array(s) of predictions, in the structure of the model's
            outputs.
        """
        return runs.run_predict(
            self,
            x=x,
            batch_size=batch_size,
            verbose=verbose,
            steps=build.capped_steps(steps),
            callbacks=callbacks,
        )

    # -- single batches ------------------------------------------------------

    def train_on_batch(
        self,
        x: Any,
        y: Any = None,
        sample_weight: Any = None,
        class_weight: dict | None = None,
        return_dict: bool = False,
    ) -> Any:
        """Runs a single gradient update on a single batch of data.

        The metrics are reset first, so the results are this batch's.

        Args:
            x: Input data. Must be array-like (an array, a tensor, or a
                list/dict of them).
            y: Target data. Must be array-like.
            sample_weight: Optional array of the same length as `x` weighting
                each sample's loss (or `(samples, sequence_length)` for
                temporal data).
            class_weight: Optional dict mapping class indices (integers) to a
                weight (float) for the samples of that class. For targets of
                rank 2 or more, `y` must be one-hot or have an explicit final
                dimension of 1 for sparse labels.
            return_dict: If `True`, the results are a dict keyed by name; if
                `False`, a list.

        Returns:
            A scalar loss value (no metrics and `return_dict=False`), a list
            of loss and metric values (`return_dict=False`), or a dict of
            them (`return_dict=True`).
        """
        self._require_compiled("train_on_batch")
        if class_weight is not None:
            from tfk_trainer.data import class_weight as class_weight_lib

            class_weight_lib.validate(class_weight)
        adapter = runs.single_batch_adapter(x, y, sample_weight, class_weight, "train_on_batch")
        return runs.run_single(self, "train", adapter, return_dict)

    def test_on_batch(
        self, x: Any, y: Any = None, sample_weight: Any = None, return_dict: bool = False
    ) -> Any:
        """Tests the model on a single batch of samples.

        The metrics are reset first, so the results are this batch's.

        Args:
            x: Input data. Must be array-like (an array, a tensor, or a
                list/dict of them).
            y: Target data. Must be array-like.
            sample_weight: Optional array of the same length as `x` weighting
                each sample's loss (or `(samples, sequence_length)` for
                temporal data).
            return_dict: If `True`, the results are a dict keyed by name; if
                `False`, a list.

        Returns:
            A scalar loss value (no metrics and `return_dict=False`), a list
            of loss and metric values (`return_dict=False`), or a dict of
            them (`return_dict=True`).
        """
        self._require_compiled("test_on_batch")
        adapter = runs.single_batch_adapter(x, y, sample_weight, None, "test_on_batch")
        return runs.run_single(self, "test", adapter, return_dict)

    def predict_on_batch(self, x: Any) -> Any:
        """Returns predictions for a single batch of samples.

        Args:
            x: Input data. It must be array-like (an array, a tensor, or a
                list/dict of them).

        Returns:
            NumPy array(s) of predictions, in the structure of the outputs.
        """
        return runs.predict_single(self, x)

    # -- saving --------------------------------------------------------------

    def save_checkpoint(self, path: str, *, include_optimizer: bool = True) -> str:
        """Saves the network and (by default) the optimizer to the checkpoint prefix `path`.

        tfk_trainer's own (Keras saves with `save_weights`): a TensorFlow
        object checkpoint, written atomically, restorable under any strategy
        with `load_checkpoint`. Only the chief worker writes.

        Args:
            path: The checkpoint prefix (files `path.index`, `path.data-*`);
                local or any `tf.io.gfile` path such as `gs://`.
            include_optimizer: Whether to save the optimizer's state too.

        Returns:
            The written prefix.
        """
        from tfk_trainer import checkpoint as checkpoint_lib

        return checkpoint_lib.save(self, path, include_optimizer=include_optimizer)

    def load_checkpoint(self, path: str, *, include_optimizer: bool = True) -> None:
        """Restores a checkpoint written by `save_checkpoint` (or by tfk-train).

        The model's variables must exist (build it first, e.g. with
        `keras.Input`, or by calling it once); a checkpoint of another model
        raises a `ValueError` naming the mismatch.

        Args:
            path: A checkpoint prefix, or a directory (its latest checkpoint).
            include_optimizer: Whether to restore the optimizer's state too.
        """
        from tfk_trainer import checkpoint as checkpoint_lib

        checkpoint_lib.load(self, path, include_optimizer=include_optimizer)


class Sequential(SequentialSurface, Model):
    """`tfk.Sequential([...layers])`: a `keras.Sequential` wrapped in a `Model`."""

    def __init__(self, layers: list | None = None, *, name: str | None = None):
        super().__init__(keras.Sequential(layers or []), name=name)
