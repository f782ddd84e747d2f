"""Keras's `Model` surface on `tfk.Model`: saving, structure, config, compile settings.

Saved files are checked against Keras itself: a `.keras` file written by
`tfk.Model.save` loads with `keras.models.load_model` and predicts what the
model predicts; paths use TF's `ram://` filesystem where Keras's own saving
reaches it (the same `tf.io.gfile` road a `gs://` path takes).
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfk_trainer as tfk

N, F, C = 32, 4, 3
_rng = np.random.default_rng(0)
X = _rng.normal(size=(N, F)).astype("float32")
Y = _rng.integers(0, C, N)


def _ram(name: str) -> str:
    return f"ram://{uuid.uuid4().hex}/{name}"


def _net() -> keras.Model:
    return keras.Sequential(
        [keras.Input((F,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(C)]
    )


def _functional() -> keras.Model:
    inputs = keras.Input((F,), name="features")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(C, name="logits")(hidden), name="func")


def _trained(network: keras.Model | None = None, **compile_kwargs) -> tfk.Model:
    model = tfk.Model(network or _net())
    compile_kwargs.setdefault("optimizer", "adam")
    compile_kwargs.setdefault("loss", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    compile_kwargs.setdefault("metrics", ["accuracy"])
    model.compile(**compile_kwargs)
    model.fit(X, Y, batch_size=8, epochs=2, verbose=0)
    return model


class Sub(tfk.Model):
    """A subclassed model: Keras layers and one bare variable."""

    def __init__(self, units: int = 6, name: str | None = None):
        super().__init__(name=name)
        self.units = units
        self.hidden = keras.layers.Dense(units, name="hidden")
        self.head = keras.layers.Dense(C, name="head")
        self.scale = tf.Variable(1.0, name="scale")

    def call(self, inputs, training=False):
        return self.head(self.hidden(inputs)) * self.scale


class Plain(tf.Module):
    """A tf.Module network (no Keras at all)."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(tf.ones([F, C]) * 0.1)

    def __call__(self, x):
        return tf.matmul(x, self.w)


# -- save("x.keras") ---------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "ram"])
@pytest.mark.parametrize("make", [_net, _functional], ids=["sequential", "functional"])
def test_save_keras_round_trips_through_keras_load_model(tmp_path, where, make):
    model = _trained(make())
    path = str(tmp_path / "model.keras") if where == "local" else _ram("model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model.network)
    np.testing.assert_allclose(
        loaded.predict(X, verbose=0), model.predict(X, verbose=0), rtol=0, atol=1e-6
    )
    # compile() arguments and the optimizer's state travel with the file, as Keras's do.
    assert loaded.compiled
    assert isinstance(loaded.optimizer, keras.optimizers.Adam)
    assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) == 8
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert isinstance(loaded.loss, keras.losses.SparseCategoricalCrossentropy)
    # The network is lent the optimizer only while Keras writes the file.
    assert "optimizer" not in vars(model.network)
    assert "get_compile_config" not in vars(model.network)


def test_save_then_wrap_the_loaded_network_trains_on():
    model = _trained()
    path = _ram("m.keras")
    model.save(path)
    again = tfk.Model(keras.models.load_model(path, compile=False))
    again.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    np.testing.assert_allclose(
        again.predict(X, verbose=0), model.predict(X, verbose=0), rtol=0, atol=1e-6
    )
    history = again.fit(X, Y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_save_uncompiled_model_writes_no_compile_config():
    model = tfk.Model(_net())
    path = _ram("plain.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert not loaded.compiled
    np.testing.assert_allclose(
        loaded.predict(X, verbose=0), model.predict(X, verbose=0), rtol=0, atol=1e-6
    )


def test_save_with_a_lambda_loss_behaves_as_keras():
    """Keras serializes a lambda with a warning and refuses it at load in safe mode."""
    model = _trained(loss=lambda y, p: keras.losses.sparse_categorical_crossentropy(y, p, True))
    path = _ram("lambda.keras")
    with pytest.warns(UserWarning, match="includes a `lambda`"):
        model.save(path)
    with pytest.raises(ValueError, match="deserialization of a Python lambda"):
        keras.models.load_model(path)
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(
        loaded.predict(X, verbose=0), model.predict(X, verbose=0), rtol=0, atol=1e-6
    )


class _CallableLoss:
    """A loss Keras cannot serialize (a plain object with __call__)."""

    def __call__(self, y_true, y_pred):
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)


def test_save_with_an_unserializable_loss_warns_and_saves_the_network():
    model = _trained(loss=_CallableLoss())
    path = _ram("callable.keras")
    with pytest.warns(UserWarning, match=r"compile\(\) arguments are not saved"):
        model.save(path)
    loaded = keras.models.load_model(path)
    assert not loaded.compiled
    np.testing.assert_allclose(
        loaded.predict(X, verbose=0), model.predict(X, verbose=0), rtol=0, atol=1e-6
    )


def test_save_wrong_suffix_is_kerass_value_error():
    model = tfk.Model(_net())
    with pytest.raises(
        ValueError, match=r"Invalid filepath extension for saving.*\.keras.*m\.ckpt"
    ):
        model.save(_ram("m.ckpt"))


def test_save_overwrite_false_refuses_to_replace(tmp_path):
    model = tfk.Model(_net())
    path = tmp_path / "m.keras"
    model.save(path)  # pathlib paths are accepted, as by Keras
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=False"):
        model.save(str(path), overwrite=False)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "make, what",
    [
        (lambda: tfk.Model(Plain()), "Plain, not a Keras model"),
        (lambda: Sub(), "subclassed tfk_trainer.Model"),
        (lambda: tfk.Model(keras.layers.Dense(C)), "Keras layer"),
    ],
    ids=["tf-module", "subclass", "keras-layer"],
)
def test_save_keras_without_a_keras_model_names_what_to_use(make, what):
    model = make()
    model.predict(X, verbose=0)
    with pytest.raises(TypeError, match=rf"(?s){what}.*save_checkpoint.*save_weights.*export"):
        model.save(_ram("m.keras"))


# -- save_weights / load_weights ----------------------------------------------------


def test_save_weights_load_weights_round_trip_with_optimizer_state():
    model = _trained()
    path = _ram("w.weights.h5")
    model.save_weights(path)
    other = tfk.Model(_net())
    other.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    other.load_weights(path)
    np.testing.assert_allclose(
        other.predict(X, verbose=0), model.predict(X, verbose=0), rtol=0, atol=1e-6
    )
    assert int(other.optimizer.iterations.numpy()) == 8  # Keras keeps a compiled model's optimizer
    # The same file loads into the bare Keras network (Keras's own format).
    bare = _net()
    bare.load_weights(path)
    np.testing.assert_allclose(
        bare.predict(X, verbose=0), model.predict(X, verbose=0), rtol=0, atol=1e-6
    )


def test_load_weights_from_a_keras_file():
    model = _trained()
    path = _ram("full.keras")
    model.save(path)
    other = tfk.Model(_net())
    other.load_weights(path)
    np.testing.assert_allclose(
        other.predict(X, verbose=0), model.predict(X, verbose=0), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("make", [lambda: Sub(), lambda: tfk.Model(Plain())], ids=["sub", "module"])
def test_save_weights_of_non_keras_networks_round_trip(make):
    model = make()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(X, Y, batch_size=8, epochs=1, verbose=0)
    path = _ram("sub/w.weights.h5")
    model.save_weights(path)
    other = make()
    other.predict(X[:2], verbose=0)  # builds the variables
    assert not np.allclose(other.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-6)
    other.load_weights(path)
    np.testing.assert_allclose(
        other.predict(X, verbose=0), model.predict(X, verbose=0), rtol=0, atol=1e-6
    )


def test_save_weights_wrong_suffix_is_kerass_value_error():
    with pytest.raises(ValueError, match=r"must end in `\.weights\.h5`.*w\.h5"):
        _trained().save_weights(_ram("w.h5"))
    with pytest.raises(ValueError, match=r"must end in `\.weights\.h5`.*w\.keras"):
        Sub().save_weights(_ram("w.keras"))


def test_load_weights_missing_file_and_other_model():
    with pytest.raises(FileNotFoundError, match=r"no file at 'ram://.*nothing\.weights\.h5'"):
        tfk.Model(_net()).load_weights(_ram("nothing.weights.h5"))
    small = Sub(units=2)
    small.predict(X[:2], verbose=0)
    path = _ram("small.weights.h5")
    small.save_weights(path)
    big = Sub(units=5)
    big.predict(X[:2], verbose=0)
    before = big.get_weights()
    with pytest.raises(ValueError, match=r"head/kernel.*shape \(2, 3\).*\(5, 3\).*skip_mismatch"):
        big.load_weights(path)
    with pytest.warns(UserWarning, match="skip_mismatch=True"):
        big.load_weights(path, skip_mismatch=True)
    after = big.get_weights()
    # Variables in `model.variables` order: head/kernel, head/bias, hidden/kernel,
    # hidden/bias, scale. Mismatched ones are kept; matching ones (head/bias, scale) load.
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], small.get_weights()[1])
    np.testing.assert_array_equal(after[-1], small.get_weights()[-1])


# -- structure ---------------------------------------------------------------------


def test_layers_get_layer_input_output_count_params_match_the_network():
    network = _functional()
    model = tfk.Model(network)
    assert model.built
    assert model.layers == network.layers
    assert model.get_layer("hidden") is network.get_layer("hidden")
    assert model.get_layer(index=1) is network.layers[1]
    assert model.input is network.input
    assert model.output is network.output
    assert model.inputs == network.inputs
    assert model.count_params() == network.count_params() == 4 * 8 + 8 + 8 * 3 + 3
    with pytest.raises(ValueError, match="No such layer: nope"):
        model.get_layer("nope")


def test_sequential_input_output_from_its_inputs():
    network = _net()
    model = tfk.Model(network)
    assert model.input is network.inputs[0]
    assert model.output is network.outputs[0]


def test_subclass_layers_count_params_and_no_input():
    model = Sub()
    assert not model.built
    with pytest.raises(ValueError, match="isn't built"):
        model.count_params()
    model.predict(X[:2], verbose=0)
    assert model.built
    assert [layer.name for layer in model.layers] == ["head", "hidden"]  # attribute order
    assert model.get_layer("hidden") is model.hidden
    assert model.count_params() == (4 * 6 + 6) + (6 * 3 + 3) + 1
    with pytest.raises(AttributeError, match="has no defined input.*subclassed"):
        _ = model.input
    with pytest.raises(AttributeError, match="has no defined output.*tf.Module|Plain"):
        _ = tfk.Model(Plain()).output


def test_summary_of_a_subclass_is_a_table():
    model = Sub()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(X, Y, batch_size=8, epochs=1, verbose=0)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        model.summary()
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0] == f'Model: "{model.name}"'
    assert "Layer (type)" in text and "Output Shape" in text and "Param #" in text
    assert any("hidden (Dense)" in line and line.rstrip(" │").endswith("30") for line in lines)
    assert any("head (Dense)" in line and line.rstrip(" │").endswith("21") for line in lines)
    assert any("outside Keras layers: 1" in line for line in lines)
    assert " Total params: 52 (208.00 B)" in lines
    assert " Trainable params: 52 (208.00 B)" in lines
    assert " Non-trainable params: 0 (0.00 B)" in lines
    assert any(line.startswith(" Optimizer params: ") for line in lines)
    captured: list[str] = []
    model.summary(print_fn=captured.append, show_trainable=True)
    assert "Trainable" in captured[0] and captured[0].splitlines()[0] == lines[0]


def test_summary_of_a_wrapped_keras_model_is_kerass():
    network = _net()
    ours: list[str] = []
    theirs: list[str] = []
    tfk.Model(network).summary(print_fn=ours.append)
    network.summary(print_fn=theirs.append)
    assert ours == theirs


def test_plot_model_reaches_keras():
    """With pydot/graphviz missing, Keras's own ImportError (not an AttributeError of ours)."""
    model = tfk.Model(_net())
    try:
        import pydot  # noqa: F401

        has_pydot = True
    except ImportError:
        has_pydot = False
    if has_pydot:  # pragma: no cover - not installed on the CI image
        keras.utils.plot_model(model.network, to_file=_ram("m.png"))
        return
    for target in (model, model.network):
        with pytest.raises(ImportError, match="install pydot"):
            keras.utils.plot_model(target)


# -- config ------------------------------------------------------------------------


def test_get_config_to_json_from_config_delegate_to_the_network():
    network = _functional()
    model = tfk.Model(network)
    assert model.get_config() == network.get_config()
    assert json.loads(model.to_json()) == json.loads(network.to_json())
    rebuilt = keras.models.model_from_json(model.to_json())
    assert [layer.name for layer in rebuilt.layers] == [layer.name for layer in network.layers]
    again = tfk.Model.from_config(model.get_config())
    assert isinstance(again, tfk.Model) and isinstance(again.network, keras.Model)
    assert again.count_params() == model.count_params()
    seq = tfk.Sequential([keras.Input((F,)), keras.layers.Dense(2)])
    seq_again = tfk.Sequential.from_config(seq.get_config())
    assert isinstance(seq_again, tfk.Sequential)
    assert isinstance(seq_again.network, keras.Sequential)
    assert seq_again.count_params() == seq.count_params() == 10


def test_subclass_get_config_of_plain_constructor_arguments():
    model = Sub(units=7, name="mine")
    assert model.get_config() == {"name": "mine", "units": 7}
    again = Sub.from_config(model.get_config())
    assert again.units == 7 and again.name == "mine"


def test_get_config_without_a_keras_config_is_not_implemented():
    with pytest.raises(NotImplementedError, match="Plain.*Override `get_config"):
        tfk.Model(Plain()).get_config()

    class TakesALayer(tfk.Model):
        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def call(self, inputs, training=False):
            return self.layer(inputs)

    with pytest.raises(NotImplementedError, match="not plain Python values"):
        TakesALayer(keras.layers.Dense(2)).get_config()


# -- compile settings --------------------------------------------------------------


def test_loss_is_what_compile_received():
    model = tfk.Model(_net())
    assert model.loss is None
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss)
    assert model.loss is loss
    model.compile("adam", "mse")
    assert model.loss == "mse"


class _EagerProbe(tfk.Model):
    def __init__(self):
        super().__init__(_net())
        self.eager: list[bool] = []

    def train_step(self, data):
        self.eager.append(tf.executing_eagerly())
        return super().train_step(data)


def test_run_eagerly_set_after_compile_takes_effect_on_next_fit():
    model = _EagerProbe()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert model.run_eagerly is False
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    assert model.eager and not any(model.eager)  # traced
    model.eager.clear()
    before = model.get_weights()
    model.run_eagerly = True
    assert model.run_eagerly is True
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    assert model.eager == [True, True]  # one eager call per step
    assert int(model.optimizer.iterations.numpy()) == 4  # optimizer state kept
    assert not np.allclose(model.get_weights()[0], before[0])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert model.run_eagerly is False  # compile() sets it again, as in Keras
    with pytest.raises(TypeError, match="`run_eagerly` must be a bool; received 'yes'"):
        model.run_eagerly = "yes"


# -- export ------------------------------------------------------------------------


def test_export_takes_kerass_format_argument(tmp_path, capsys):
    model = _trained()
    path = str(tmp_path / "serving")
    assert model.export(path, format="tf_saved_model") == path
    assert "Saved artifact at" in capsys.readouterr().out
    served = tf.saved_model.load(path).signatures["serving_default"]
    out = served(tf.constant(X))["outputs"].numpy()
    np.testing.assert_allclose(out, model.predict(X, verbose=0), rtol=0, atol=1e-6)
    with pytest.raises(
        ValueError, match=r"Unrecognized format='onnx'.*\['tf_saved_model'\].*network\.export"
    ):
        model.export(str(tmp_path / "x"), format="onnx")
    with pytest.raises(ValueError, match=r"Unrecognized format='zip'"):
        model.export(str(tmp_path / "x"), format="zip")
    with pytest.raises(TypeError, match="is_static"):
        model.export(str(tmp_path / "x"), is_static=True)


def test_export_with_input_signature_before_any_data(tmp_path):
    model = tfk.Model(Plain())
    path = str(tmp_path / "sig")
    model.export(path, verbose=False, input_signature=[tf.TensorSpec([None, F], tf.float32)])
    served = tf.saved_model.load(path).signatures["serving_default"]
    np.testing.assert_allclose(
        served(tf.constant(X))["outputs"].numpy(), X @ np.full((F, C), 0.1), rtol=0, atol=1e-5
    )


# -- Sequential.add / pop ----------------------------------------------------------


def test_sequential_add_pop_layers_delegate_to_keras():
    model = tfk.Sequential([keras.Input((F,)), keras.layers.Dense(8)])
    assert [type(layer).__name__ for layer in model.layers] == ["Dense"]
    model.add(keras.layers.Dense(C, name="top"))
    assert model.layers == model.network.layers and len(model.layers) == 2
    assert model.predict(X, verbose=0).shape == (N, C)
    popped = model.pop()
    assert popped.name == "top" and len(model.layers) == 1
    assert model.predict(X, verbose=0).shape == (N, 8)
    model.add(keras.layers.Dense(C))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(X, Y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
