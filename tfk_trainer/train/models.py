"""Built-in models: "mlp", "resnet" (small, images) and "transformer" (small encoder).

Each is `fn(config, input_shape, num_classes) -> keras.Model`, where `config`
is the config's `model` section. They end in a float32 softmax (correct
under mixed precision), so they pair with `sparse_categorical_crossentropy`.
"""

from __future__ import annotations

from typing import Any

import keras

from tfk_trainer.registry import register_model

# -- checks of the `model` section (run by the binary before any data is loaded) --


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_dropout(config: Any) -> list[str]:
    rate = config.dropout
    if not 0.0 <= rate < 1.0:
        return [
            f"model.dropout must be in [0, 1) (the fraction of units dropped); received {rate!r}."
        ]
    return []


def _check_at_least(config: Any, key: str, minimum: int) -> list[str]:
    value = config[key]
    if not _is_int(value) or value < minimum:
        return [f"model.{key} must be an int >= {minimum}; received {value!r}."]
    return []


def _check_widths(config: Any, key: str, allow_empty: bool) -> list[str]:
    widths = tuple(config[key])
    if (not widths and not allow_empty) or not all(_is_int(w) and w >= 1 for w in widths):
        kind = "a tuple of" if allow_empty else "a non-empty tuple of"
        return [f"model.{key} must be {kind} positive ints; received {widths!r}."]
    return []


def _check_activation(config: Any) -> list[str]:
    name = config.activation
    try:
        keras.activations.get(name)
    except (ValueError, TypeError):
        return [
            f"model.activation {name!r} is not a Keras activation (e.g. 'relu', 'gelu', "
            "'tanh'; see keras.activations)."
        ]
    return []


def _check_mlp(config: Any) -> list[str]:
    return (
        _check_widths(config, "hidden_units", allow_empty=True)
        + _check_dropout(config)
        + _check_activation(config)
    )


def _check_resnet(config: Any) -> list[str]:
    problems = _check_widths(config, "stage_filters", allow_empty=False)
    problems += _check_at_least(config, "blocks_per_stage", 1)
    problems += _check_dropout(config)
    if config.l2 < 0:
        problems.append(f"model.l2 must be >= 0; received {config.l2!r}.")
    return problems


def _check_transformer(config: Any) -> list[str]:
    problems = _check_at_least(config, "vocab_size", 0)
    for key in ("embed_dim", "num_heads", "ff_dim", "num_layers"):
        problems += _check_at_least(config, key, 1)
    sizes_ok = not any(p.startswith(("model.embed_dim", "model.num_heads")) for p in problems)
    if sizes_ok and config.embed_dim % config.num_heads:
        problems.append(
            f"model.embed_dim ({config.embed_dim}) must be divisible by model.num_heads "
            f"({config.num_heads})."
        )
    return problems + _check_dropout(config)


# -- the models -------------------------------------------------------------------


def _classifier_head(x: Any, num_classes: int, dropout: float) -> Any:
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)


@register_model(
    "mlp",
    defaults={"hidden_units": (256, 128), "dropout": 0.2, "activation": "relu"},
    check=_check_mlp,
)
def mlp(config: Any, input_shape: tuple, num_classes: int) -> keras.Model:
    """Flatten, then Dense layers (`hidden_units`), with Dropout after every hidden
    layer but the last, then the softmax classifier."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    units = list(config.hidden_units)
    for i, n in enumerate(units):
        x = keras.layers.Dense(n, activation=config.activation, name=f"dense_{i}")(x)
        if config.dropout and i < len(units) - 1:
            x = keras.layers.Dropout(config.dropout)(x)
    return keras.Model(inputs, _classifier_head(x, num_classes, 0.0), name="mlp")


def _as_image(inputs: Any, input_shape: tuple) -> Any:
    if len(input_shape) == 2:  # (height, width): one channel
        return keras.layers.Reshape((*input_shape, 1))(inputs)
    if len(input_shape) == 3:
        return inputs
    raise ValueError(
        f'model "resnet" needs image inputs of shape (height, width) or (height, width, '
        f"channels); the data has examples of shape {tuple(input_shape)}."
    )


def _conv_bn(x: Any, filters: int, strides: int, l2: float, activation: bool = True) -> Any:
    regularizer = keras.regularizers.L2(l2) if l2 else None
    x = keras.layers.Conv2D(
        filters,
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_regularizer=regularizer,
    )(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU()(x) if activation else x


def _residual_block(x: Any, filters: int, strides: int, l2: float) -> Any:
    shortcut = x
    y = _conv_bn(x, filters, strides, l2)
    y = _conv_bn(y, filters, 1, l2, activation=False)
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=strides, use_bias=False)(shortcut)
        shortcut = keras.layers.BatchNormalization()(shortcut)
    return keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))


@register_model(
    "resnet",
    defaults={"stage_filters": (16, 32, 64), "blocks_per_stage": 1, "dropout": 0.0, "l2": 0.0},
    check=_check_resnet,
)
def resnet(config: Any, input_shape: tuple, num_classes: int) -> keras.Model:
    """A small ResNet (CIFAR-style): a 3x3 stem, then one stage per `stage_filters`
    entry of `blocks_per_stage` basic blocks (the first of each later stage
    halves the resolution), global average pooling and the classifier."""
    inputs = keras.Input(input_shape)
    filters = list(config.stage_filters)
    x = _conv_bn(_as_image(inputs, tuple(input_shape)), filters[0], 1, config.l2)
    for stage, n in enumerate(filters):
        for block in range(config.blocks_per_stage):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _residual_block(x, n, strides, config.l2)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, _classifier_head(x, num_classes, config.dropout), name="resnet")


class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to a `(batch, length, dim)` input."""

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            shape=(input_shape[-2], input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="embeddings",
        )

    def call(self, inputs):
        return inputs + keras.ops.cast(self.embeddings, inputs.dtype)


def _encoder_block(x: Any, config: Any) -> Any:
    key_dim = config.embed_dim // config.num_heads
    y = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    y = keras.layers.MultiHeadAttention(config.num_heads, key_dim, dropout=config.dropout)(y, y)
    x = keras.layers.Add()([x, keras.layers.Dropout(config.dropout)(y)])
    y = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    y = keras.layers.Dense(config.ff_dim, activation="gelu")(y)
    y = keras.layers.Dense(config.embed_dim)(y)
    return keras.layers.Add()([x, keras.layers.Dropout(config.dropout)(y)])


@register_model(
    "transformer",
    defaults={
        "vocab_size": 0,
        "embed_dim": 64,
        "num_heads": 4,
        "ff_dim": 128,
        "num_layers": 2,
        "dropout": 0.1,
    },
    check=_check_transformer,
)
def transformer(config: Any, input_shape: tuple, num_classes: int) -> keras.Model:
    """A small pre-norm Transformer encoder classifier.

    With `vocab_size` > 0 the inputs are integer token ids of shape
    `(length,)`; with 0 they are float features of shape `(length, features)`
    (an image's rows, say) or `(length,)`, projected to `embed_dim`. Learned
    position embeddings, `num_layers` encoder blocks, mean pooling, classifier.
    """
    if config.embed_dim % config.num_heads:
        raise ValueError(
            f"model.embed_dim ({config.embed_dim}) must be divisible by model.num_heads "
            f"({config.num_heads})."
        )
    shape = tuple(input_shape)
    if config.vocab_size:
        if len(shape) != 1:
            raise ValueError(
                f"model.vocab_size > 0 means token-id inputs of shape (length,); the data has "
                f"examples of shape {shape}. Set model.vocab_size = 0 for float features."
            )
        inputs = keras.Input(shape, dtype="int32")
        x = keras.layers.Embedding(config.vocab_size, config.embed_dim)(inputs)
    else:
        if len(shape) not in (1, 2):
            raise ValueError(
                f'model "transformer" with float inputs needs examples of shape (length,) or '
                f"(length, features); the data has {shape}."
            )
        inputs = keras.Input(shape)
        x = keras.layers.Reshape((*shape, 1))(inputs) if len(shape) == 1 else inputs
        x = keras.layers.Dense(config.embed_dim)(x)
    x = PositionEmbedding()(x)
    x = keras.layers.Dropout(config.dropout)(x)
    for _ in range(config.num_layers):
        x = _encoder_block(x, config)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, _classifier_head(x, num_classes, config.dropout), name="transformer")
