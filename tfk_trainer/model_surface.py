"""The rest of Keras's `Model` surface on `tfk_trainer.Model`.

`Model` inherits `ModelSurface`: `save`, `save_weights`, `load_weights`,
`export(format=...)`, `layers`, `get_layer`, `input`, `output`, `built`,
`count_params`, `summary`, `get_config`/`from_config`/`to_json`,
`run_eagerly` and `loss`, with Keras 3's signatures and meanings. Where
Keras's meaning is about the network (its architecture, its `.keras` file),
the wrapped Keras network does the work, so a file written here is the file
Keras writes and `keras.models.load_model` reads it. The engine's own
checkpoint format (`save_checkpoint`, any strategy, any network) stays the
way to keep and resume training state.

The methods here carry Keras's signatures and docstrings; the saving and
export bodies live in `tfk_trainer/saving.py` (every path may be remote
there: `gs://`, `ram://`), the summary table in `tfk_trainer/model_summary.py`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

import keras

from tfk_trainer import model_summary, saving

_BASIC_TYPES = (str, int, float, bool, type(None))


def _is_basic(value: Any) -> bool:
    """A constructor argument that `get_config` can return as JSON (Keras's auto-config rule)."""
    if isinstance(value, _BASIC_TYPES):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_basic(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_basic(v) for k, v in value.items())
    return False


class ModelSurface:
    """Keras's `Model` attributes and saving, for `tfk_trainer.Model` (a mixin).

    Relies on the host class for `network`, `variables`, `trainable_variables`,
    `non_trainable_variables`, `optimizer`, `compiled`, `_compile_config`,
    `_state` and `_walk`.
    """

    # -- construction arguments (Keras's auto `get_config` for subclasses) ------

    def __new__(cls, *args: Any, **kwargs: Any):
        instance = super().__new__(cls)
        # Keras records a subclass's constructor arguments the same way, so that
        # `get_config()` works without an override when they are plain values.
        try:
            bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
            arguments = dict(list(bound.arguments.items())[1:])
        except TypeError:
            arguments = None
        if arguments is not None and not _is_basic(arguments):
            arguments = None  # layers, networks...: kept only by the attributes that hold them
        object.__setattr__(instance, "_tfk_init_args", arguments)
        return instance

    # -- structure ------------------------------------------------------------

    @property
    def built(self) -> bool:
        """True once the model's variables exist (Keras's `Model.built`)."""
        if self._state.network_built:
            return True
        network = self.network
        if isinstance(network, keras.layers.Layer):
            return bool(network.built)
        layers = self._walk()[0] if network is None else []
        if layers:  # a subclass: built once its Keras layers are
            return all(layer.built for layer in layers)
        return bool(self.variables)

    @property
    def layers(self) -> list:
        """The Keras layers of the model, as `keras.Model.layers` lists them.

        A wrapped Keras model: its own `layers`. A wrapped Keras layer: that
        layer. A subclass (or a `tf.Module` network): the Keras layers found on
        its attributes (top-level ones; nested layers stay inside their parent).
        """
        network = self.network
        if isinstance(network, keras.Model):
            return list(network.layers)
        if isinstance(network, keras.layers.Layer):
            return [network]
        return list(self._walk()[0])

    def get_layer(self, name: str | None = None, index: int | None = None) -> Any:
        """Retrieves a layer by its (unique) name or its index in `layers`.

        Args:
            name: the layer's name.
            index: the layer's position in `model.layers`.

        Returns:
            The layer. Raises a ValueError for an unknown name, an index out of
            range, or neither or both given (Keras's messages).
        """
        if isinstance(self.network, keras.Model):
            return self.network.get_layer(name=name, index=index)
        if index is not None and name is not None:
            raise ValueError(
                f"Provide only a layer name or a layer index. Received: index={index}, name={name}."
            )
        layers = self.layers
        if index is not None:
            if len(layers) <= index:
                raise ValueError(
                    f"Was asked to retrieve layer at index {index} but model only has "
                    f"{len(layers)} layers."
                )
            return layers[index]
        if name is not None:
            for layer in layers:
                if layer.name == name:
                    return layer
            raise ValueError(
                f"No such layer: {name}. Existing layers are: {[layer.name for layer in layers]}."
            )
        raise ValueError("Provide either a layer name or layer index at `get_layer`.")

    def _symbolic(self, attr: str) -> Any:
        """`input`/`output` (one tensor or a structure) or `inputs`/`outputs` (a list)."""
        network = self.network
        plural = attr.endswith("s")
        if isinstance(network, keras.Model):
            # A Sequential is never called symbolically, so Keras's own `input`
            # raises there; its `inputs`/`outputs` lists are defined once built.
            try:
                return getattr(network, attr)
            except (AttributeError, ValueError) as e:
                reason = str(e)
            if not plural:
                tensors = getattr(network, f"{attr}s", None)
                if tensors:
                    return tensors[0] if len(tensors) == 1 else list(tensors)
            raise AttributeError(
                f"Model {self.name!r}: the wrapped network {network.name!r} has no defined "
                f"{attr}: {reason}"
            )
        kind = "is subclassed" if network is None else f"wraps a {type(network).__name__}"
        raise AttributeError(
            f"Model {self.name!r} has no defined {attr}: it {kind}, and only a wrapped "
            f"functional or Sequential Keras model has symbolic {attr}. Build the network "
            "with keras.Input (e.g. tfk.Model(keras.Model(inputs, outputs)))."
        )

    @property
    def inputs(self) -> list:
        """The symbolic inputs (a list) of a wrapped functional or Sequential Keras model."""
        return self._symbolic("inputs")

    @property
    def outputs(self) -> list:
        """The symbolic outputs (a list) of a wrapped functional or Sequential Keras model."""
        return self._symbolic("outputs")

    @property
    def input(self) -> Any:
        """The symbolic input(s) of a wrapped functional or Sequential Keras model."""
        return self._symbolic("input")

    @property
    def output(self) -> Any:
        """The symbolic output(s) of a wrapped functional or Sequential Keras model."""
        return self._symbolic("output")

    def count_params(self) -> int:
        """The number of scalars in the model's weights (each variable counted once).

        Raises a ValueError, as Keras does, when no variable exists yet.
        """
        if not self.built:
            raise ValueError(
                f"You tried to call `count_params` on model '{self.name}', but the model isn't "
                "built. Build it first: call it on a batch, fit it, or give the network a "
                "keras.Input."
            )
        return model_summary.param_count(self.variables)[0]

    # -- configuration -------------------------------------------------------

    def get_config(self) -> dict:
        """The network's configuration (Keras's `get_config`).

        A wrapped Keras network returns its own config. A subclass returns its
        constructor arguments when they are plain values (Keras's rule for
        subclassed models); otherwise override `get_config`.
        """
        network = self.network
        if isinstance(network, keras.layers.Layer):
            return network.get_config()
        arguments = getattr(self, "_tfk_init_args", None)
        if network is None and arguments is not None:
            config = dict(arguments)
            config.pop("name", None)
            return {"name": self.name, **config}
        what = (
            f"the wrapped network is a {type(network).__name__}, which has no Keras config"
            if network is not None
            else "its constructor takes arguments that are not plain Python values"
        )
        raise NotImplementedError(
            f"{type(self).__name__}.get_config(): {what}. Override `get_config()` (and "
            "`from_config()` if needed) to return the constructor arguments, or save the "
            "training state with `save_checkpoint()`."
        )

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Any:
        """Creates a model from `get_config()`'s output.

        For `tfk.Model`/`tfk.Sequential`, the config is a Keras network's: the
        network is rebuilt by Keras and wrapped. A subclass is called with the
        config as keyword arguments (Keras's rule).
        """
        from tfk_trainer import model as model_lib

        if cls in (model_lib.Model, model_lib.Sequential):
            sequential = cls is model_lib.Sequential or not all(
                key in config for key in ("input_layers", "output_layers")
            )
            builder = keras.Sequential if sequential else keras.Model
            with keras.saving.custom_object_scope(custom_objects or {}):
                network = builder.from_config(config)
            model = cls()
            model.network = network  # the same wrapping as tfk.Model(network)
            return model
        return cls(**config)

    def to_json(self, **kwargs: Any) -> str:
        """The wrapped Keras network as JSON (`keras.models.model_from_json` reads it).

        Args:
            **kwargs: passed to `json.dumps`.
        """
        network = self.network
        if isinstance(network, keras.Model):
            return network.to_json(**kwargs)
        return json.dumps(
            {"class_name": type(self).__name__, "config": self.get_config()}, **kwargs
        )

    # -- compile settings ----------------------------------------------------

    @property
    def run_eagerly(self) -> bool:
        """Whether steps run eagerly (for debugging), as `compile(run_eagerly=...)` set it.

        Setting it after `compile()` takes effect at the next `fit`, `evaluate`
        or `predict` (the compiled functions are remade); before `compile()` it
        applies to `predict`, and `compile()` then sets it again.
        """
        config = getattr(self, "_compile_config", None)
        if config is not None:
            return bool(config.run_eagerly)
        return bool(getattr(self, "_tfk_run_eagerly", False))

    @run_eagerly.setter
    def run_eagerly(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"`run_eagerly` must be a bool; received {value!r}.")
        object.__setattr__(self, "_tfk_run_eagerly", value)
        config = getattr(self, "_compile_config", None)
        if config is None or config.run_eagerly == value:
            if config is None and self._state.network_built:
                self._state.network_built = False  # the predict function is remade
            return
        from tfk_trainer import distribute
        from tfk_trainer.engine import execution
        from tfk_trainer.engine.tuning import ExecutionLengths

        strategy = self.distribute_strategy
        config.run_eagerly = value
        self._state.jit = execution.resolve_jit_compile(config.jit_compile, strategy, value)
        self._state.execution_lengths = ExecutionLengths(
            config.steps_per_execution,
            can_fold=not (value or distribute.is_multi_worker(strategy)),
            agree=distribute.chief_decides(strategy),
        )
        # The next fit/evaluate/predict remakes the compiled functions (variables,
        # loss, metrics and optimizer state are kept).
        self._state.network_built = False
        self._state.executor = None

    @property
    def loss(self) -> Any:
        """What was passed to `compile(loss=...)` (None before `compile`), as Keras's `model.loss`."""
        config = getattr(self, "_compile_config", None)
        return None if config is None else config.loss

    def get_compile_config(self) -> dict:
        """The `compile()` arguments in Keras's form (what a `.keras` file stores)."""
        config = getattr(self, "_compile_config", None)
        if config is None:
            return {}
        steps = config.steps_per_execution
        return {
            "optimizer": self.optimizer,
            "loss": config.loss,
            "loss_weights": config.loss_weights,
            "metrics": config.metrics or None,
            "weighted_metrics": config.weighted_metrics or None,
            "run_eagerly": config.run_eagerly,
            # Keras has no "auto": a loaded Keras model runs one step per execution.
            "steps_per_execution": steps if isinstance(steps, int) else 1,
            "jit_compile": config.jit_compile,
            "auto_scale_loss": config.auto_scale_loss,
        }

    # -- summary -------------------------------------------------------------

    def summary(
        self,
        line_length: int | None = None,
        positions: list | None = None,
        print_fn: Callable[..., Any] | None = None,
        expand_nested: bool = False,
        show_trainable: bool = False,
        layer_range: list | tuple | None = None,
    ) -> None:
        """Prints a table of the layers and the parameter counts (Keras's `summary`).

        A wrapped Keras model prints Keras's own summary. Otherwise the table
        lists the Keras layers found on the model (name, type, output shape
        when the layer has a symbolic one, else "?", parameters), a row for
        variables outside Keras layers, and the totals.

        Args:
            line_length: total width of the table (Keras's default when None).
            positions: Keras's column positions (wrapped Keras models only).
            print_fn: called with the text instead of `print`.
            expand_nested: list nested layers too (wrapped Keras models only).
            show_trainable: add a column saying whether each layer is trainable.
            layer_range: Keras's layer range (wrapped Keras models only).
        """
        if isinstance(self.network, keras.Model):
            self.network.summary(
                line_length=line_length,
                positions=positions,
                print_fn=print_fn,
                expand_nested=expand_nested,
                show_trainable=show_trainable,
                layer_range=layer_range,
            )
            return
        print_fn = print_fn or print
        print_fn(model_summary.table(self, line_length or 80, show_trainable))

    # -- export --------------------------------------------------------------

    def export(
        self,
        filepath: str,
        format: str = "tf_saved_model",
        verbose: bool | None = None,
        input_signature: Any = None,
        **kwargs: Any,
    ) -> str:
        """Writes a SavedModel for inference (Keras 3's `export`), see `tfk_trainer.export`.

        Args:
            filepath: the SavedModel directory (must not exist, or be empty).
            format: "tf_saved_model" (Keras's other formats are not written by
                tfk; a wrapped Keras model can use `model.network.export`).
            verbose: print where the artifact was written (default True).
            input_signature: the inputs' `tf.TensorSpec` structure (a list of
                one structure, as Keras takes it, is accepted); needed only
                when the model has not seen data yet.
            **kwargs: none are accepted for "tf_saved_model".

        Returns:
            `filepath`.
        """
        return saving.export(self, filepath, format, verbose, input_signature, kwargs)

    # -- saving: .keras, .weights.h5 -------------------------------------------

    def save(
        self, filepath: Any, overwrite: bool = True, zipped: bool | None = None, **kwargs: Any
    ) -> None:
        """Saves the wrapped Keras model as a `.keras` file (Keras's `model.save`).

        The file is the one Keras writes for the network: its architecture and
        weights, and, when the model is compiled, the `compile()` arguments
        (where Keras can serialize them) and the optimizer's state.
        `keras.models.load_model(filepath)` returns the network (compiled by
        Keras from those arguments); wrap it in `tfk.Model` to train it here
        again. For training state under any strategy and any network, use
        `save_checkpoint`; for serving, `export`.

        Args:
            filepath: a path ending in `.keras` (or Keras's legacy `.h5`); may
                be a `gs://` URL.
            overwrite: replace an existing file. With False, an existing file
                raises FileExistsError (Keras would ask on the terminal).
            zipped: Keras's: False writes an unzipped directory.
            **kwargs: Keras's `include_optimizer` (legacy `.h5` only).
        """
        saving.save(self, filepath, overwrite, zipped, kwargs)

    def save_weights(
        self, filepath: Any, overwrite: bool = True, max_shard_size: Any = None
    ) -> None:
        """Saves the weights to a `.weights.h5` file (Keras's `model.save_weights`).

        A wrapped Keras model writes Keras's file (with the optimizer's state
        when compiled, as Keras does for a compiled model). Any other network
        (a subclass, a `tf.Module`) writes its variables in `model.variables`
        order, which `load_weights` of the same model reads back.

        Args:
            filepath: a path ending in `.weights.h5`; may be a `gs://` URL.
            overwrite: replace an existing file (False: FileExistsError if it exists).
            max_shard_size: Keras's sharding (wrapped Keras models only;
                the path then ends in `.weights.json`).
        """
        saving.save_weights(self, filepath, overwrite, max_shard_size)

    def load_weights(self, filepath: Any, skip_mismatch: bool = False, **kwargs: Any) -> None:
        """Loads weights written by `save_weights` (or a `.keras` file's weights).

        Args:
            filepath: a `.weights.h5` (or `.keras`, for wrapped Keras models)
                path; may be a `gs://` URL.
            skip_mismatch: skip variables whose shape does not match (with a
                warning) instead of raising.
            **kwargs: Keras's legacy `objects_to_skip`/`by_name` (wrapped
                Keras models only).
        """
        saving.load_weights(self, filepath, skip_mismatch, kwargs)


class SequentialSurface:
    """`add`/`pop` of the wrapped `keras.Sequential`, for `tfk_trainer.Sequential`."""

    def add(self, layer: Any, rebuild: bool = True) -> None:
        """Adds a layer on top of the layer stack (Keras's `Sequential.add`).

        Args:
            layer: a Keras layer (or `keras.Input`).
            rebuild: rebuild the network when it can be built.
        """
        self.network.add(layer, rebuild=rebuild)
        self._network_changed()

    def pop(self, rebuild: bool = True) -> Any:
        """Removes and returns the last layer (Keras's `Sequential.pop`).

        Args:
            rebuild: rebuild the network when it can be built.
        """
        layer = self.network.pop(rebuild=rebuild)
        self._network_changed()
        return layer

    def _network_changed(self) -> None:
        """The variables and compiled functions are found again at the next use."""
        self._state.network_built = False
        self._state.built = False
        self._state.executor = None
