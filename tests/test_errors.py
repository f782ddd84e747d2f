"""Clear errors for misuse of compile/fit/evaluate/*_on_batch.

Each test asserts the exception type and that the message names the
offending argument (or says plainly what is wrong), so that a user never has
to read a TensorFlow stack trace to find their mistake.
"""

from __future__ import annotations

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfk_trainer as tfk

N = 20
FEATURES = 4


def _net() -> keras.Model:
    return keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(2)])


def _data(n: int = N):
    x = np.random.rand(n, FEATURES).astype("float32")
    y = np.random.randint(0, 2, size=(n,)).astype("int32")
    return x, y


def _model(compile: bool = True, **compile_kwargs) -> tfk.Model:
    model = tfk.Model(_net())
    if compile:
        kwargs = {"optimizer": "sgd", "loss": "sparse_categorical_crossentropy"}
        kwargs.update(compile_kwargs)
        model.compile(**kwargs)
    return model


def _dataset(n: int = N, batch: int = 5) -> tf.data.Dataset:
    x, y = _data(n)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


# -- not compiled -------------------------------------------------------------


def test_fit_before_compile():
    x, y = _data()
    with pytest.raises(RuntimeError, match=r"compile\(\).*fit\(\)"):
        _model(compile=False).fit(x, y, verbose=0)


def test_evaluate_before_compile():
    x, y = _data()
    with pytest.raises(RuntimeError, match=r"compile\(\).*evaluate\(\)"):
        _model(compile=False).evaluate(x, y, verbose=0)


def test_train_on_batch_before_compile():
    x, y = _data()
    with pytest.raises(RuntimeError, match=r"compile\(\).*train_on_batch\(\)"):
        _model(compile=False).train_on_batch(x, y)


# -- array inputs ---------------------------------------------------------------


def test_x_y_length_mismatch():
    x, _ = _data(10)
    _, y = _data(8)
    with pytest.raises(ValueError, match=r"same number of samples.*x: 10.*y: 8"):
        _model().fit(x, y, verbose=0)


def test_x_dict_mismatched_lengths():
    inputs = {"a": keras.Input((2,), name="a"), "b": keras.Input((2,), name="b")}
    out = keras.layers.Dense(2)(keras.layers.Concatenate()([inputs["a"], inputs["b"]]))
    model = tfk.Model(keras.Model(inputs, out))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = {"a": np.zeros((10, 2), "float32"), "b": np.zeros((8, 2), "float32")}
    y = np.zeros((10,), "int32")
    with pytest.raises(ValueError, match=r"same number of samples.*x\['a'\]: 10.*x\['b'\]: 8"):
        model.fit(x, y, verbose=0)


def test_sample_weight_wrong_length():
    x, y = _data(10)
    with pytest.raises(ValueError, match=r"sample_weight: 7"):
        _model().fit(x, y, sample_weight=np.ones((7,), "float32"), verbose=0)


def test_object_dtype_array():
    x = np.array([[1.0, "a", 2.0, 3.0], [1.0, 2.0, None, 3.0]], dtype=object)
    y = np.zeros((2,), "int32")
    with pytest.raises(TypeError, match=r"`x`.*dtype=object"):
        _model().fit(x, y, verbose=0)


def test_empty_array():
    x = np.zeros((0, FEATURES), "float32")
    y = np.zeros((0,), "int32")
    with pytest.raises(ValueError, match=r"empty \(0 samples in x, y\)"):
        _model().fit(x, y, verbose=0)


def test_namedtuple_as_x():
    Batch = collections.namedtuple("B", ["x", "y"])
    x, y = _data()
    with pytest.raises(TypeError, match=r"`x`.*namedtuple"):
        _model().fit(Batch(x, y), verbose=0)


# -- validation ----------------------------------------------------------------


@pytest.mark.parametrize("split", [-0.1, 1.0, 1.5])
def test_validation_split_out_of_range(split):
    x, y = _data()
    with pytest.raises(ValueError, match=r"validation_split"):
        _model().fit(x, y, validation_split=split, verbose=0)


def test_validation_split_string():
    x, y = _data()
    with pytest.raises(TypeError, match=r"validation_split"):
        _model().fit(x, y, validation_split="0.2", verbose=0)


def test_validation_split_with_dataset():
    with pytest.raises(ValueError, match=r"validation_split"):
        _model().fit(_dataset(), validation_split=0.2, verbose=0)


def test_validation_data_wrong_length():
    x, y = _data()
    with pytest.raises(ValueError, match=r"validation_data.*length 4"):
        _model().fit(x, y, validation_data=(x, y, np.ones(N), np.ones(N)), verbose=0)


def test_validation_freq_zero():
    x, y = _data()
    with pytest.raises(ValueError, match=r"validation_freq"):
        _model().fit(x, y, validation_data=(x, y), validation_freq=0, verbose=0)


# -- datasets ------------------------------------------------------------------


def test_batch_size_with_dataset():
    # Keras 3 ignores batch_size for inputs that batch themselves; we warn (issue 19 item 15).
    with pytest.warns(UserWarning, match=r"batch_size"):
        _model().fit(_dataset(), batch_size=4, verbose=0)


def test_y_with_dataset():
    _, y = _data()
    with pytest.raises(ValueError, match=r"`y`"):
        _model().fit(_dataset(), y, verbose=0)


def test_sample_weight_with_dataset():
    with pytest.raises(ValueError, match=r"sample_weight"):
        _model().fit(_dataset(), sample_weight=np.ones(N, "float32"), verbose=0)


def test_namedtuple_batch_from_dataset():
    Batch = collections.namedtuple("B", ["x", "y"])
    x, y = _data()
    ds = tf.data.Dataset.from_tensor_slices(Batch(x, y)).batch(5)
    with pytest.raises(TypeError, match=r"namedtuple"):
        _model().fit(ds, verbose=0)


@pytest.mark.timeout(60)
def test_infinite_dataset_without_steps_per_epoch():
    ds = _dataset().repeat()
    with pytest.raises(ValueError, match=r"steps_per_epoch"):
        _model().fit(ds, verbose=0)


# -- unknown keyword arguments ---------------------------------------------------


def test_evaluate_unknown_kwarg():
    x, y = _data()
    with pytest.raises(TypeError, match=r"bogus_arg"):
        _model().evaluate(x, y, bogus_arg=1, verbose=0)


def test_fit_unknown_kwarg():
    x, y = _data()
    with pytest.raises(TypeError, match=r"bogus_arg"):
        _model().fit(x, y, bogus_arg=1, verbose=0)


# -- compile arguments ----------------------------------------------------------


@pytest.mark.parametrize(
    "value, exc",
    [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("2", TypeError)],
)
def test_steps_per_execution_invalid(value, exc):
    with pytest.raises(exc, match=r"steps_per_execution"):
        _model(steps_per_execution=value)


def test_jit_compile_invalid():
    with pytest.raises(ValueError, match=r"jit_compile"):
        _model(jit_compile="yes")


def test_unknown_optimizer_suggests_adam():
    with pytest.raises(ValueError, match=r"(?s)optimizer.*'adamm'.*Did you mean 'adam'"):
        _model(optimizer="adamm")


def test_every_optimizer_the_catalogue_names_compiles():
    """One catalogue: the names compile()'s error offers, and the binary's choices."""
    from tfk_trainer import compile as compile_lib
    from tfk_trainer.train import config

    assert set(config.OPTIMIZERS) <= set(compile_lib.OPTIMIZERS)
    for name, cls in compile_lib.OPTIMIZERS.items():
        model = _model(optimizer=name.upper() if name == "lamb" else name)
        assert type(model.optimizer) is cls, name


def test_int_arguments_name_what_is_accepted():
    x, y = _data()
    with pytest.raises(TypeError, match=r"`epochs` must be an int >= 0; received epochs=True"):
        _model().fit(x, y, epochs=True, verbose=0)
    with pytest.raises(ValueError, match=r"^EarlyStopping: `patience` must be an int >= 0"):
        tfk.callbacks.EarlyStopping(patience=-2)


def test_unknown_loss_string():
    with pytest.raises(ValueError, match=r"(?s)Unknown loss 'mean_squared_eror'.*`loss`"):
        _model(loss="mean_squared_eror")


def test_unknown_metric_string():
    with pytest.raises(ValueError, match=r"(?s)'acuracy'.*`metrics`"):
        _model(metrics=["acuracy"])


def test_metrics_single_string():
    with pytest.raises(TypeError, match=r"`metrics` must be a list"):
        _model(metrics="accuracy")


@pytest.mark.parametrize(
    "loss",
    [
        ["mse", "mae"],
        {"out_a": "mse", "out_b": "mae"},
    ],
)
def test_per_output_losses_for_a_single_output_model(loss):
    """A list must map 1:1 to the outputs; a dict must use output names."""
    x, y = _data()
    with pytest.raises(ValueError, match=r"`loss`.*(entries|not output names)"):
        _model(loss=loss).fit(x, y, verbose=0)


def test_jit_compile_true_under_mirrored_cpu(mirrored_strategy):
    strategy = mirrored_strategy(2)
    with strategy.scope():
        model = tfk.Model(_net())
        with pytest.raises(ValueError, match=r"jit_compile=True.*multi-replica"):
            model.compile(optimizer="sgd", loss="mse", jit_compile=True)


# -- fit arguments ----------------------------------------------------------------


def test_epochs_negative():
    x, y = _data()
    with pytest.raises(ValueError, match=r"`epochs`"):
        _model().fit(x, y, epochs=-1, verbose=0)


def test_batch_size_zero():
    x, y = _data()
    with pytest.raises(ValueError, match=r"`batch_size`"):
        _model().fit(x, y, batch_size=0, verbose=0)


def test_class_weight_not_a_dict():
    x, y = _data()
    with pytest.raises(TypeError, match=r"`class_weight` must be a dict"):
        _model().fit(x, y, class_weight=[1.0, 2.0], verbose=0)


def test_class_weight_negative_key():
    x, y = _data()
    with pytest.raises(ValueError, match=r"`class_weight` keys.*-1"):
        _model().fit(x, y, class_weight={-1: 1.0, 0: 1.0}, verbose=0)


def test_callbacks_with_non_callback():
    x, y = _data()
    with pytest.raises(TypeError, match=r"`callbacks`.*object"):
        _model().fit(x, y, callbacks=[object()], verbose=0)


# -- beyond the brief: inputs that reach the graph before failing -----------------


def test_string_targets_with_numeric_loss():
    """A string `y` cannot feed a numeric loss: say so up front, naming `y`."""
    x, _ = _data()
    y = np.array(["cat", "dog"] * (N // 2))
    with pytest.raises((TypeError, ValueError), match=r"`y`"):
        _model().fit(x, y, verbose=0)


def test_sample_weight_wrong_rank():
    """Per-sample weights of shape (N, 3) for per-sample losses of shape (N,)."""
    x, y = _data()
    with pytest.raises(ValueError, match=r"`sample_weight`"):
        _model().fit(x, y, sample_weight=np.ones((N, 3), "float32"), verbose=0)


# -- output paths that cannot be written ------------------------------------------


def _blocked(tmp_path, *parts: str) -> str:
    """A path below a regular file: no one can create it, root included."""
    (tmp_path / "afile").write_text("not a directory\n")
    return str(tmp_path.joinpath("afile", "sub", *parts))


@pytest.mark.parametrize("kind", ["csv", "modelcheckpoint", "tensorboard", "backup"])
def test_unwritable_callback_path_fails_before_the_first_step(kind, tmp_path):
    """The named error comes from on_train_begin: no step (no epoch of work) is lost."""
    path = _blocked(tmp_path, "out")
    callback = {
        "csv": lambda: tfk.callbacks.CSVLogger(path),
        "modelcheckpoint": lambda: tfk.callbacks.ModelCheckpoint(path),
        "tensorboard": lambda: tfk.callbacks.TensorBoard(path),
        "backup": lambda: tfk.callbacks.BackupAndRestore(path),
    }[kind]()
    argument = {"csv": "filename", "modelcheckpoint": "filepath"}.get(kind, "")
    model = _model()
    x, y = _data()
    with pytest.raises(
        NotADirectoryError, match=rf"`{argument or '[a-z_]+'}` '[^']*afile/sub"
    ) as info:
        model.fit(x, y, batch_size=5, epochs=2, callbacks=[callback], verbose=0)
    assert info.value.errno == 20  # ENOTDIR, kept from the original error
    assert int(model.optimizer.iterations.numpy()) == 0


def test_read_only_directory_is_a_named_permission_error(tmp_path, monkeypatch):
    """A directory that exists but cannot be written (os.access mocked: root ignores
    permission bits, so chmod cannot show it here)."""
    from tfk_trainer import paths

    monkeypatch.setattr(paths.os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError, match=r"`log_dir` '[^']*' cannot be written"):
        paths.make_dirs(str(tmp_path), "log_dir")
    with pytest.raises(PermissionError, match=r"`filepath` '[^']*ck' cannot be created or written"):
        paths.check_creatable(str(tmp_path / "a" / "b"), "filepath", path=str(tmp_path / "ck"))


def test_check_creatable_creates_nothing_and_stops_at_formatted_parts(tmp_path):
    from tfk_trainer import paths
    from tfk_trainer.callbacks.checkpoint import _fixed_directory

    paths.check_creatable(str(tmp_path / "new" / "deeper"), "filepath")
    assert not (tmp_path / "new").exists()
    filepath = str(tmp_path / "runs" / "{epoch:02d}" / "ckpt-{val_loss:.2f}")
    assert _fixed_directory(filepath) == str(tmp_path / "runs")


def test_modelcheckpoint_with_a_formatted_directory_still_saves(tmp_path):
    x, y = _data()
    filepath = str(tmp_path / "runs" / "epoch{epoch}" / "ckpt")
    _model().fit(x, y, epochs=2, callbacks=[tfk.callbacks.ModelCheckpoint(filepath)], verbose=0)
    assert (tmp_path / "runs" / "epoch2" / "ckpt.index").exists()


def test_save_checkpoint_to_an_unwritable_path_names_path(tmp_path):
    model = _model()
    x, y = _data()
    model.train_on_batch(x, y)
    with pytest.raises(NotADirectoryError, match=r"save_checkpoint: `path` '[^']*afile/sub/ckpt'"):
        model.save_checkpoint(_blocked(tmp_path, "ckpt"))


# -- targets that the loss cannot take, checked when the model is built -------------


def _net_out(units: int) -> keras.Model:
    return keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(units)])


@pytest.mark.parametrize(
    "units, loss, y",
    [
        (1, "mse", np.random.rand(N).astype("float32")),  # (N,) against (N, 1)
        (1, "mse", np.random.rand(N, 1).astype("float32")),
        (3, "sparse_categorical_crossentropy", np.random.randint(0, 3, N)),  # (N,)
        (3, "sparse_categorical_crossentropy", np.random.randint(0, 3, (N, 1))),  # (N, 1)
        (3, "categorical_crossentropy", np.eye(3, dtype="float32")[np.random.randint(0, 3, N)]),
        (3, "crossentropy", np.random.randint(0, 3, N)),
        (1, "binary_crossentropy", np.random.randint(0, 2, N).astype("float32")),
        (3, "mse", np.random.rand(N, 1).astype("float32")),  # broadcasts, as in Keras
    ],
)
def test_targets_that_fit_the_loss_still_train(units, loss, y):
    x, _ = _data()
    model = tfk.Model(_net_out(units))
    model.compile("sgd", loss)
    history = model.fit(x, y, batch_size=5, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])


@pytest.mark.parametrize(
    "units, loss, y_shape, expected",
    [
        (
            3,
            "categorical_crossentropy",
            (N, 5),
            r"`y` has shape \(None, 5\).*\(None, 3\).*'categorical_crossentropy'",
        ),
        (3, "mse", (N, 5), r"`y` has shape \(None, 5\).*\(None, 3\).*'mse'"),
    ],
)
def test_targets_that_do_not_fit_the_loss_name_y(units, loss, y_shape, expected):
    x, _ = _data()
    model = tfk.Model(_net_out(units))
    model.compile("sgd", loss)
    with pytest.raises(ValueError, match=expected):
        model.fit(x, np.zeros(y_shape, "float32"), verbose=0)
    with pytest.raises(ValueError, match=expected):
        model.train_on_batch(x, np.zeros(y_shape, "float32"))


def test_the_target_check_traces_the_loss_without_running_it():
    """A loss that asserts on values is traced, not run on dummy zeros: no false error."""

    def positive_targets_loss(y_true, y_pred):
        tf.debugging.assert_positive(y_true)  # the zeros of a dummy batch would fail it
        return tf.reduce_mean(tf.square(y_true - y_pred), axis=-1)

    x, _ = _data()
    model = tfk.Model(_net_out(1))
    model.compile("sgd", positive_targets_loss)
    history = model.fit(x, np.ones((N, 1), "float32") + 1.0, verbose=0).history
    assert np.isfinite(history["loss"][0])


def test_targets_of_one_output_of_two_are_named():
    inputs = keras.Input((FEATURES,))
    net = keras.Model(
        inputs,
        {
            "a": keras.layers.Dense(3, name="a")(inputs),
            "b": keras.layers.Dense(1, name="b")(inputs),
        },
    )
    model = tfk.Model(net)
    model.compile("sgd", {"a": "sparse_categorical_crossentropy", "b": "mse"})
    x, y = _data()
    with pytest.raises(ValueError, match=r"`y` for the output 'a' has shape \(None, 5\)"):
        model.fit(x, {"a": np.zeros((N, 5)), "b": np.zeros(N)}, verbose=0)


# -- validation inputs that do not fit the model -----------------------------------


def test_validation_inputs_of_another_length_pass_when_the_model_accepts_them():
    """A model over variable-length sequences: validation sequences may be longer."""
    net = keras.Sequential(
        [keras.Input((None, 2)), keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(3)]
    )
    model = tfk.Model(net)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.rand(N, 6, 2).astype("float32")
    y = np.random.randint(0, 3, N)
    vx = np.random.rand(8, 9, 2).astype("float32")
    history = model.fit(x, y, validation_data=(vx, y[:8]), verbose=0).history
    assert np.isfinite(history["val_loss"][0])


def test_validation_generator_with_varying_dims_passes():
    net = keras.Sequential(
        [keras.Input((None, 2)), keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(3)]
    )
    model = tfk.Model(net)
    model.compile("sgd", "sparse_categorical_crossentropy")

    def batches(lengths):
        def generate():
            for t in lengths:
                yield np.random.rand(4, t, 2).astype("float32"), np.random.randint(0, 3, 4)

        return generate

    history = model.fit(
        batches([5, 6, 7]), validation_data=batches([11, 3]), epochs=2, verbose=0
    ).history
    assert len(history["val_loss"]) == 2


def test_validation_inputs_with_other_dict_keys_name_validation_data():
    inputs = {"a": keras.Input((2,), name="a"), "b": keras.Input((2,), name="b")}
    out = keras.layers.Dense(3)(keras.layers.Concatenate()([inputs["a"], inputs["b"]]))
    model = tfk.Model(keras.Model(inputs, out))
    model.compile("sgd", "sparse_categorical_crossentropy")
    x, y = _data()
    train = {"a": x[:, :2], "b": x[:, 2:]}
    bad = {"a": x[:, :2], "c": x[:, 2:]}
    with pytest.raises(ValueError, match=r"inputs of `validation_data` do not fit the model"):
        model.fit(train, y, validation_data=(bad, y), verbose=0)


# -- sparse labels out of range, for in-memory arrays -------------------------------


def _sparse_model(**loss_kwargs) -> tfk.Model:
    model = tfk.Model(_net_out(3))
    loss = (
        keras.losses.SparseCategoricalCrossentropy(**loss_kwargs)
        if loss_kwargs
        else "sparse_categorical_crossentropy"
    )
    model.compile("sgd", loss)
    return model


@pytest.mark.parametrize("as_tensor", [False, True], ids=["numpy", "tensor"])
def test_out_of_range_labels_are_named_for_evaluate_and_batches(as_tensor):
    x, _ = _data()
    y = np.random.randint(0, 3, N)
    y[11] = 3
    if as_tensor:
        y = tf.constant(y)
    expected = r"`y` holds the label 3 \(sample 11\), outside the valid range \[0, 3\)"
    with pytest.raises(ValueError, match=expected):
        _sparse_model().evaluate(x, y, verbose=0)
    with pytest.raises(ValueError, match=expected):
        _sparse_model().train_on_batch(x, y)
    with pytest.raises(ValueError, match=expected):
        _sparse_model().test_on_batch(x, y)


def test_ignore_class_labels_are_accepted():
    x, _ = _data()
    y = np.random.randint(0, 3, N)
    y[::4] = -1
    history = _sparse_model(ignore_class=-1).fit(x, y, verbose=0).history
    assert np.isfinite(history["loss"][0])
    y[1] = -2
    with pytest.raises(ValueError, match=r"label -2 \(sample 1\).*or the ignore_class -1"):
        _sparse_model(ignore_class=-1).fit(x, y, verbose=0)


def test_labels_in_range_and_other_losses_are_not_rejected():
    x, _ = _data()
    # Integer regression targets far outside [0, 3): not class indices for MSE.
    model = tfk.Model(_net_out(3))
    model.compile("sgd", "mse", metrics=["mae"])
    model.fit(x, np.full((N, 3), 7.0, "float32"), verbose=0)
    _sparse_model().fit(x, np.random.randint(0, 3, (N, 1)), verbose=0)  # (N, 1) labels
