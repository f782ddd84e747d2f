"""Keras conformance (issue 19): each behaviour a Keras user's code relies on,
checked against `keras.Model.fit` on the same tiny network and data.

Each test builds the same thing twice, once on `keras.Model` and once on
`tfk.Model` (only the base class or the wrapping line differs), and compares
what the user sees: History keys and values, logs handed to callbacks,
weights. Where tfk_trainer differs on purpose, the test says so and points to
docs/differences.md.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfk_trainer as tfk

ATOL = 1e-5


def data(n: int = 32, features: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x @ rng.normal(size=(features, 1))).astype("float32")
    return x, y


def net(features: int = 4, units: int = 1, seed: int = 3) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((features,)), keras.layers.Dense(units)])


def both(seed: int = 3, **compile_kwargs):
    """`(keras model, tfk model)`: the same network and weights, compiled alike
    (`optimizer` a string, so each gets its own)."""
    k = net(seed=seed)
    t = tfk.Model(net(seed=seed))
    compile_kwargs.setdefault("optimizer", "sgd")
    compile_kwargs.setdefault("loss", "mse")
    k.compile(**compile_kwargs)
    t.compile(**compile_kwargs)
    return k, t


def assert_history_equal(hk, ht, atol: float = ATOL) -> None:
    assert list(hk.history) == list(ht.history)
    for key in hk.history:
        np.testing.assert_allclose(hk.history[key], ht.history[key], atol=atol, err_msg=key)


# -- 1: `training` passed only when `call` / `compute_loss` take it -------------------------


def _no_training_subclass(base):
    class NoTraining(base):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):  # no `training`, as in many Keras docs
            return self.dense(x)

    return NoTraining


def test_call_without_training_argument_trains_like_keras():
    x, y = data()
    models = []
    for base in (keras.Model, tfk.Model):
        keras.utils.set_random_seed(5)
        m = _no_training_subclass(base)()
        m(x[:1])
        m.compile(optimizer="sgd", loss="mse")
        models.append(m)
    k, t = models
    t.set_weights(k.get_weights())
    hk = k.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    ht = t.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    assert_history_equal(hk, ht)
    np.testing.assert_allclose(k.predict(x, verbose=0), t.predict(x, verbose=0), atol=ATOL)


def test_compute_loss_without_training_argument():
    """Keras's older `compute_loss(x, y, y_pred, sample_weight)` signature."""

    def with_loss(base):
        class OldLoss(base):
            def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
                return tf.reduce_mean(tf.abs(y - y_pred))

        return OldLoss

    x, y = data()
    inner = net()
    k = with_loss(keras.Model)(inner.inputs, inner.outputs)
    t = with_loss(tfk.Model)(net())
    k.compile(optimizer="sgd")
    t.compile(optimizer="sgd")
    hk = k.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    ht = t.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    assert_history_equal(hk, ht)


# -- 2: what a step returns is what `fit` logs ----------------------------------------------


def _returning(base, kind: str):
    class Returning(base):
        def train_step(self, data):
            logs = super().train_step(data)
            if kind == "super":
                return logs
            return {"my_metric": 10.0}

        def test_step(self, data):
            logs = super().test_step(data)
            if kind == "super":
                return logs
            return {"my_val": 2.5}

    return Returning


@pytest.mark.parametrize("kind", ["super", "plain"])
def test_train_step_return_is_logged(kind):
    x, y = data()
    inner = net()
    k = _returning(keras.Model, kind)(inner.inputs, inner.outputs)
    t = _returning(tfk.Model, kind)(net())
    k.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    t.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    seen = {}

    class Batch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.setdefault(id(self.model), dict(logs))

    hk = k.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        shuffle=False,
        validation_data=(x, y),
        callbacks=[Batch()],
    )
    ht = t.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        shuffle=False,
        validation_data=(x, y),
        callbacks=[Batch()],
    )
    assert_history_equal(hk, ht)
    seen_k, seen_t = seen[id(k)], seen[id(t)]
    assert sorted(seen_k) == sorted(seen_t)
    for key in seen_k:
        np.testing.assert_allclose(seen_k[key], seen_t[key], atol=ATOL)
    rk = k.evaluate(x, y, verbose=0, return_dict=True)
    rt = t.evaluate(x, y, verbose=0, return_dict=True)
    assert sorted(rk) == sorted(rt)
    for key in rk:
        np.testing.assert_allclose(rk[key], rt[key], atol=ATOL)


def test_super_train_step_returns_logs_dict():
    captured = {}

    class Capture(tfk.Model):
        def train_step(self, data):
            logs = super().train_step(data)
            captured["keys"] = sorted(logs)
            return logs

    x, y = data()
    t = Capture(net())
    t.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    t.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert captured["keys"] == ["loss", "mae"]


# -- 6: `*_begin` hooks get a dict -----------------------------------------------------------


def test_begin_hooks_receive_empty_dict():
    got = {"keras": [], "tfk": []}

    class Record(keras.callbacks.Callback):
        def __init__(self, key):
            super().__init__()
            self.key = key

        def _log(self, hook, logs):
            got[self.key].append((hook, type(logs).__name__ if logs is None else "dict"))

        def on_train_begin(self, logs=None):
            self._log("train_begin", logs)

        def on_epoch_begin(self, epoch, logs=None):
            self._log("epoch_begin", logs)
            logs.get("anything")

        def on_train_batch_begin(self, batch, logs=None):
            self._log("train_batch_begin", logs)

        def on_test_begin(self, logs=None):
            self._log("test_begin", logs)

        def on_test_batch_begin(self, batch, logs=None):
            self._log("test_batch_begin", logs)

        def on_predict_begin(self, logs=None):
            self._log("predict_begin", logs)

        def on_predict_batch_begin(self, batch, logs=None):
            self._log("predict_batch_begin", logs)

        def on_predict_end(self, logs=None):
            self._log("predict_end", logs)

    x, y = data(n=8)
    k, t = both()
    for key, m in (("keras", k), ("tfk", t)):
        m.fit(
            x, y, batch_size=8, epochs=1, verbose=0, validation_data=(x, y), callbacks=[Record(key)]
        )
        m.predict(x, batch_size=8, verbose=0, callbacks=[Record(key)])
    assert got["keras"] == got["tfk"]
    assert all(kind == "dict" for _, kind in got["tfk"])


# -- 12: recompiling resets the per-output loss logs ----------------------------------------


def _two_outputs(seed: int = 3) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((4,))
    return keras.Model(
        inp, {"a": keras.layers.Dense(1, name="a")(inp), "b": keras.layers.Dense(1, name="b")(inp)}
    )


def test_recompile_per_output_losses_like_keras():
    x, y = data()
    k, t = _two_outputs(), tfk.Model(_two_outputs())
    targets = {"a": y, "b": 2 * y}
    for loss in ({"a": "mse", "b": "mse"}, {"a": "mse", "b": "mae"}, {"a": None, "b": "mse"}):
        for m in (k, t):
            m.compile(optimizer="sgd", loss=loss)
        hk = k.fit(x, targets, batch_size=8, epochs=1, verbose=0, shuffle=False)
        ht = t.fit(x, targets, batch_size=8, epochs=1, verbose=0, shuffle=False)
        assert_history_equal(hk, ht)
        assert all(v[0] != 0.0 for v in ht.history.values())


# -- 14: EarlyStopping infers the direction of a metric -------------------------------------


@pytest.mark.parametrize("monitor", ["mae", "val_mae", "val_loss"])
def test_early_stopping_auto_mode_from_metric(monitor):
    x, y = data()
    k, t = both(metrics=["mae"])
    cb_k = keras.callbacks.EarlyStopping(monitor=monitor, patience=0)
    cb_t = tfk.callbacks.EarlyStopping(monitor=monitor, patience=0)
    fit = dict(batch_size=8, epochs=3, verbose=0, shuffle=False, validation_data=(x, y))
    hk = k.fit(x, y, callbacks=[cb_k], **fit)
    ht = t.fit(x, y, callbacks=[cb_t], **fit)
    assert_history_equal(hk, ht)
    assert cb_t.monitor_op(1.0, 2.0) == cb_k.monitor_op(1.0, 2.0)  # lower is better


# -- 4: `trainable = False` between fits ----------------------------------------------------


@pytest.mark.parametrize("what", ["model", "layer"])
def test_trainable_false_between_fits_trains_nothing(what):
    """Keras freezes after a `compile()`; tfk also without one (docs/differences.md)."""
    x, y = data()
    k, t = both()
    for recompile in (True, False):
        for m, network in ((k, k), (t, t.network)):
            m.fit(x, y, batch_size=8, epochs=1, verbose=0)
            if what == "model":
                m.trainable = False
            else:
                network.layers[0].trainable = False
            if recompile:
                m.compile(optimizer="sgd", loss="mse")
        before = t.get_weights()
        if recompile:
            before_k = k.get_weights()
            k.fit(x, y, batch_size=8, epochs=1, verbose=0)
            for a, b in zip(before_k, k.get_weights()):
                np.testing.assert_array_equal(a, b)
        t.fit(x, y, batch_size=8, epochs=1, verbose=0)
        for a, b in zip(before, t.get_weights()):
            np.testing.assert_array_equal(a, b)
        assert t.trainable_weights == [] and len(t.non_trainable_weights) == 2
        t.trainable = True
        k.trainable = True
        for m in (k, t):
            m.compile(optimizer="sgd", loss="mse")


# -- 5: stop_evaluating / stop_predicting from a callback -----------------------------------


def _forever(x, y):
    def gen():
        while True:
            for i in range(0, len(x), 8):
                yield x[i : i + 8], y[i : i + 8]

    return gen()


def test_stop_evaluating_and_predicting_from_callback():
    x, y = data()
    k, t = both()

    class Stop(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.test_batches, self.predict_batches = [], []

        def on_test_batch_end(self, batch, logs=None):
            self.test_batches.append(batch)
            if batch == 2:
                self.model.stop_evaluating = True

        def on_predict_batch_end(self, batch, logs=None):
            self.predict_batches.append(batch)
            if batch == 1:
                self.model.stop_predicting = True

    results = []
    for m in (k, t):
        cb = Stop()
        loss = m.evaluate(_forever(x, y), verbose=0, callbacks=[cb])
        out = m.predict(_forever(x, y), verbose=0, callbacks=[cb])
        results.append((cb.test_batches, cb.predict_batches, loss, out.shape))
        # The next run starts afresh (Keras resets the flags at the start of each).
        assert len(m.predict(x, batch_size=8, verbose=0)) == len(x)
    (tk, pk, lk, sk), (tt, pt, lt, st) = results
    assert tk == tt == [0, 1, 2]
    assert pk == pt == [0, 1]
    assert sk == st == (16, 1)
    np.testing.assert_allclose(lk, lt, atol=ATOL)


# -- 3: a subclass with only `train_step` (Keras's GAN guide) -------------------------------


def _gan(base):
    class GAN(base):
        def __init__(self, discriminator, generator):
            super().__init__()
            self.discriminator = discriminator
            self.generator = generator
            self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
            self.g_loss_tracker = keras.metrics.Mean(name="g_loss")

        def compile(self, d_optimizer, g_optimizer, loss_fn):
            super().compile()
            self.d_optimizer = d_optimizer
            self.g_optimizer = g_optimizer
            self.loss_fn = loss_fn

        def train_step(self, real):
            if isinstance(real, tuple):  # as the guide does
                real = real[0]
            noise = real[:, ::-1] * 0.5  # deterministic "latent" input
            fake = self.generator(noise)
            both = tf.concat([fake, real], axis=0)
            labels = tf.concat([tf.ones_like(real[:, :1]), tf.zeros_like(real[:, :1])], axis=0)
            with tf.GradientTape() as tape:
                d_loss = self.loss_fn(labels, self.discriminator(both))
            grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
            self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))
            with tf.GradientTape() as tape:
                g_loss = self.loss_fn(
                    tf.zeros_like(real[:, :1]), self.discriminator(self.generator(noise))
                )
            grads = tape.gradient(g_loss, self.generator.trainable_weights)
            self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
            self.d_loss_tracker.update_state(d_loss)
            self.g_loss_tracker.update_state(g_loss)
            return {"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result()}

        @property
        def metrics(self):  # as in the guide: reset at each epoch
            return [self.d_loss_tracker, self.g_loss_tracker]

    return GAN


def test_gan_subclass_without_call_trains_like_keras():
    x, _ = data()
    histories, weights = [], []
    for base in (keras.Model, tfk.Model):
        keras.utils.set_random_seed(11)
        disc = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")], name="d"
        )
        gen = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)], name="g")
        gan = _gan(base)(disc, gen)
        gan.compile(
            d_optimizer=keras.optimizers.SGD(0.1),
            g_optimizer=keras.optimizers.SGD(0.1),
            loss_fn=keras.losses.BinaryCrossentropy(),
        )
        histories.append(gan.fit(x, batch_size=8, epochs=2, verbose=0, shuffle=False))
        weights.append(disc.get_weights() + gen.get_weights())
    assert_history_equal(*histories)
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=ATOL)


# -- 10: Model.add_weight, state updated by a callback --------------------------------------


def _counting(base):
    class Counting(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.seen = self.add_weight(shape=(), initializer="zeros", trainable=False, name="seen")
            self.scale = self.add_weight(shape=(), initializer="ones", trainable=True, name="scale")

        def call(self, x, training=False):
            return self.dense(x) * self.scale

    return Counting


def test_add_weight_updated_by_callback_and_trained():
    x, y = data()
    models = []
    for base in (keras.Model, tfk.Model):
        keras.utils.set_random_seed(5)
        m = _counting(base)()
        m.dense = keras.layers.Dense(1)
        m(x[:1])
        m.compile(optimizer="sgd", loss="mse")
        models.append(m)
    k, t = models
    t.dense.set_weights(k.dense.get_weights())

    class Count(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.model.seen.assign_add(1.0)

    hk = k.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False, callbacks=[Count()])
    ht = t.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False, callbacks=[Count()])
    assert_history_equal(hk, ht)
    assert float(t.seen.numpy()) == float(k.seen.numpy()) == 8.0
    np.testing.assert_allclose(t.scale.numpy(), k.scale.numpy(), atol=ATOL)
    assert any(v is t.scale for v in t.trainable_variables)
    assert any(v is t.seen for v in t.non_trainable_variables)


# -- 11: mixed_float16 set on the model, not globally -------------------------------------------


def test_mixed_float16_policy_on_model_gets_loss_scale_optimizer():
    x, y = data()

    def mixed_net():
        keras.utils.set_random_seed(3)
        inp = keras.Input((4,))
        out = keras.layers.Dense(1, dtype="mixed_float16")(inp)
        return keras.Model(inp, keras.layers.Activation("linear", dtype="float32")(out))

    class Sub(keras.Model):
        def __init__(self):
            super().__init__(dtype="mixed_float16")
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

    k = Sub()
    k.compile(optimizer="sgd", loss="mse")
    assert isinstance(k.optimizer, keras.optimizers.LossScaleOptimizer)
    t = tfk.Model(mixed_net())
    t.compile(optimizer="sgd", loss="mse")
    assert isinstance(t.optimizer, keras.optimizers.LossScaleOptimizer)
    t.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert keras.config.dtype_policy().name == "float32"
    t32 = tfk.Model(net())
    t32.compile(optimizer="sgd", loss="mse")
    assert not isinstance(t32.optimizer, keras.optimizers.LossScaleOptimizer)


# -- 13: ModelCheckpoint(save_freq=N) counts this fit's batches -----------------------------


def test_checkpoint_save_freq_counts_this_fits_batches(tmp_path):
    x, y = data()  # 4 batches of 8 per epoch
    k, t = both()
    saved = {}
    for name, m in (("keras", k), ("tfk", t)):
        m.fit(x, y, batch_size=8, epochs=1, verbose=0)  # already trained: 4 optimizer steps
        folder = tmp_path / name
        folder.mkdir()
        path = str(folder / "w{epoch}.weights.h5")
        cb = (keras.callbacks if name == "keras" else tfk.callbacks).ModelCheckpoint(
            path, save_weights_only=True, save_freq=6
        )
        m.fit(x, y, batch_size=8, epochs=4, verbose=0, callbacks=[cb])
        saved[name] = sorted(p.name for p in folder.iterdir())
    assert saved["keras"] == saved["tfk"] == ["w2.weights.h5", "w3.weights.h5"]


# -- 15: batch_size alongside inputs that batch themselves ----------------------------------


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x) // 8

    def __getitem__(self, i):
        return self.x[i * 8 : (i + 1) * 8], self.y[i * 8 : (i + 1) * 8]


@pytest.mark.parametrize("kind", ["pydataset", "dataset", "generator"])
def test_batch_size_ignored_for_self_batching_inputs(kind):
    x, y = data()

    def source():
        if kind == "pydataset":
            return _Batches(x, y)
        if kind == "dataset":
            return tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        return ((x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8))

    k, t = both()
    hk = k.fit(source(), batch_size=5, epochs=1, verbose=0, shuffle=False)
    with pytest.warns(UserWarning, match="batch_size=5` is ignored"):
        ht = t.fit(source(), batch_size=5, epochs=1, verbose=0, shuffle=False)
    assert_history_equal(hk, ht)


# -- 16: Sequential surface, LambdaCallback attributes, verbose messages --------------------


def test_sequential_add_pop_layers_like_keras():
    x, y = data()
    k = keras.Sequential([keras.Input((4,))])
    t = tfk.Sequential([keras.Input((4,))])
    for m in (k, t):
        m.add(keras.layers.Dense(3))
        m.add(keras.layers.Dense(2))
        m.pop()
        m.add(keras.layers.Dense(1))
    assert [type(layer).__name__ for layer in k.layers] == [
        type(layer).__name__ for layer in t.layers
    ]
    t.set_weights(k.get_weights())
    for m in (k, t):
        m.compile(optimizer="sgd", loss="mse")
    hk = k.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    ht = t.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert_history_equal(hk, ht)


def test_lambda_callback_keeps_extra_keyword_arguments():
    x, y = data(n=8)
    k, t = both()
    for m, module in ((k, keras.callbacks), (t, tfk.callbacks)):
        cb = module.LambdaCallback(tag="mine", seen=[])
        cb.on_epoch_end = lambda epoch, logs, cb=cb: cb.seen.append(cb.tag)
        assert cb.tag == "mine"
        m.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
        assert cb.seen == ["mine", "mine"]
    with pytest.raises(TypeError, match="on_epoch_ends"):
        tfk.callbacks.LambdaCallback(on_epoch_ends=print)


def test_verbose_messages_follow_keras_interactive_logging(capsys):
    x, y = data(n=8)
    outs = []
    for m, module in zip(both(), (keras.callbacks, tfk.callbacks)):
        cb = module.LearningRateScheduler(lambda epoch, lr: 0.5, verbose=1)
        m.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
        outs.append(capsys.readouterr().out.strip())
    assert outs[0] == outs[1] != ""
    keras.config.disable_interactive_logging()
    try:
        t = both()[1]
        t.fit(
            x,
            y,
            epochs=1,
            verbose=0,
            callbacks=[tfk.callbacks.LearningRateScheduler(lambda epoch, lr: 0.5, verbose=1)],
        )
        assert capsys.readouterr().out == ""
    finally:
        keras.config.enable_interactive_logging()


# -- 9: keras.config.set_max_epochs / set_max_steps_per_epoch -------------------------------


def test_max_epochs_and_max_steps_per_epoch():
    x, y = data(n=80)  # 10 batches of 8
    k, t = both()

    class Count(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs, self.batches = 0, 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epochs += 1

        def on_train_batch_begin(self, batch, logs=None):
            self.batches += 1

    counts, histories = [], []
    keras.config.set_max_epochs(2)
    keras.config.set_max_steps_per_epoch(3)
    try:
        for m in (k, t):
            cb = Count()
            histories.append(
                m.fit(x, y, batch_size=8, epochs=4, verbose=0, shuffle=False, callbacks=[cb])
            )
            counts.append((cb.epochs, cb.batches, len(m.predict(x, batch_size=8, verbose=0))))
    finally:
        keras.config.set_max_epochs(None)
        keras.config.set_max_steps_per_epoch(None)
    assert counts[0] == counts[1] == (2, 6, 24)
    assert_history_equal(*histories)


# -- 8: targets only for the outputs that have a loss ---------------------------------------


def _three_outputs(seed: int = 3) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((4,))
    outs = [keras.layers.Dense(1, name=n)(inp) for n in ("a", "b", "c")]
    return keras.Model(inp, outs)


@pytest.mark.parametrize("targets", ["array", "list", "dict"])
def test_targets_only_for_outputs_with_a_loss(targets):
    x, y = data()
    k, t = _three_outputs(), tfk.Model(_three_outputs())
    for m in (k, t):
        m.compile(optimizer="sgd", loss=["mse", None, None])
    given = {"array": y, "list": [y], "dict": {"a": y}}[targets]
    hk = k.fit(x, given, batch_size=8, epochs=2, verbose=0, shuffle=False)
    ht = t.fit(x, given, batch_size=8, epochs=2, verbose=0, shuffle=False)
    assert_history_equal(hk, ht)
    np.testing.assert_allclose(
        k.evaluate(x, given, verbose=0), t.evaluate(x, given, verbose=0), atol=ATOL
    )


# -- 17: finite data that ends before steps_per_epoch ---------------------------------------


@pytest.mark.parametrize("kind", ["dataset", "generator_fn"])
def test_data_shorter_than_steps_per_epoch_starts_fresh_pass(kind):
    """Each epoch ends where the data does; the next starts a fresh pass (Keras 3)."""
    x, y = data(n=40)  # 5 batches of 8

    def source():
        if kind == "dataset":
            return tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        return lambda: ((x[i : i + 8], y[i : i + 8]) for i in range(0, 40, 8))

    k, t = both()
    hk = k.fit(source(), epochs=3, steps_per_epoch=8, verbose=0) if kind == "dataset" else None
    with pytest.warns(UserWarning, match="ran out of data"):
        ht = t.fit(source(), epochs=3, steps_per_epoch=8, verbose=0)
    assert ht.epoch == [0, 1, 2]
    assert int(t.optimizer.iterations.numpy()) == 15
    if hk is not None:
        assert hk.epoch == ht.epoch
        assert int(k.optimizer.iterations.numpy()) == 15
        assert_history_equal(hk, ht)


def test_train_step_plain_logs_under_two_replicas(mirrored_strategy):
    """The returned logs are recorded per replica and read once (the first replica's)."""
    x, y = data()
    with mirrored_strategy(2).scope():
        t = _returning(tfk.Model, "plain")(net())
        t.compile(optimizer="sgd", loss="mse")
    history = t.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_data=(x, y))
    assert history.history == {"my_metric": [10.0, 10.0], "val_my_val": [2.5, 2.5]}
