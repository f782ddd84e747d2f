"""Built-in datasets: "fashion_mnist", "npz", "synthetic", "tfds" and "tfrecord".

A dataset function takes the config's `data` section and returns `Splits`:
NumPy `(x, y)` pairs (preferred: exact resume, `validation_split`) or
unbatched `tf.data.Dataset`s of `(x, y)`. The binary batches, shuffles and
applies `max_train_samples`/`max_test_samples` itself.
"""

from __future__ import annotations

import importlib.util
import io
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tfk_trainer.registry import register_dataset

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass
class Splits:
    """What a dataset function returns.

    Attributes:
        train, test: `(x, y)` NumPy arrays, or unbatched `tf.data.Dataset`s of `(x, y)`.
        input_shape: the shape of one example (no batch dimension).
        num_classes: the number of labels (labels are ints in [0, num_classes)).
        validation: optional held-out data; when None, `data.validation_split`
            of the training arrays is held out instead.
    """

    train: Arrays | tf.data.Dataset
    test: Arrays | tf.data.Dataset
    input_shape: tuple[int, ...]
    num_classes: int
    validation: Arrays | tf.data.Dataset | None = None


def is_arrays(data: Any) -> bool:
    return isinstance(data, tuple) and len(data) == 2 and not isinstance(data, tf.data.Dataset)


def limit(data: Any, n: int) -> Any:
    """The first `n` examples (`n` = 0: all)."""
    if not n or data is None:
        return data
    if isinstance(data, tf.data.Dataset):
        return data.take(n)
    return data[0][:n], data[1][:n]


def _to_float(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(x.dtype, np.floating) and x.dtype != np.float32:
        return x.astype(np.float32)
    return x


# -- paths (local or gs://) ------------------------------------------------------


def _user_path(path: str) -> str:
    """`~` expanded for a local path; a URL (gs://...) as given (abspath or expanduser
    would glue it onto the working directory)."""
    return path if "://" in path else os.path.expanduser(path)


def _is_dir(path: str) -> bool:
    return tf.io.gfile.isdir(_user_path(path))


def _is_file(path: str) -> bool:
    path = _user_path(path)
    return tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)


def _load_npz(path: str) -> Any:
    """`np.load` of a .npz through tf.io.gfile (any file system; no pickles)."""
    with tf.io.gfile.GFile(_user_path(path), "rb") as f:
        return np.load(io.BytesIO(f.read()), allow_pickle=False)


# -- fashion_mnist -------------------------------------------------------------


def _check_fashion_mnist(config: Any) -> list[str]:
    from tfk_trainer.datasets import fashion_mnist as fm

    data_dir = config.data_dir
    if data_dir:
        if not _is_dir(data_dir):
            return [f"data.data_dir {data_dir!r} is not a directory."]
        folders = [data_dir]
    elif os.environ.get(fm.ENV_VAR):
        folders = [os.environ[fm.ENV_VAR]]
    else:
        folders = list(fm.DEFAULT_SEARCH_DIRS)
    folders = [f if "://" in f else os.path.abspath(os.path.expanduser(f)) for f in folders]
    for folder in folders:
        if all(_is_file(os.path.join(folder, n)) for n in fm.FILES.values()):
            return []
    return [
        "data.name 'fashion_mnist': the Fashion-MNIST files "
        f"({', '.join(fm.FILES.values())}) are not in {folders}"
        + (" (data.data_dir)" if data_dir else "")
        + ". Install the Debian package dataset-fashion-mnist (bash tools/setup_env.sh does), "
        f"or set data.data_dir (or ${fm.ENV_VAR}) to a folder holding them."
    ]


@register_dataset("fashion_mnist", defaults={"data_dir": ""}, check=_check_fashion_mnist)
def fashion_mnist(config: Any) -> Splits:
    """The real Fashion-MNIST, read from local files (never downloaded): 60000 train
    and 10000 test images of shape (28, 28), float32 in [0, 1], 10 classes."""
    from tfk_trainer.datasets import load_fashion_mnist

    train, test = load_fashion_mnist(data_dir=config.data_dir or None)
    return Splits(train=train, test=test, input_shape=(28, 28), num_classes=10)


# -- npz -----------------------------------------------------------------------

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _check_npz(config: Any) -> list[str]:
    path = config.path
    if not path:
        return [
            "data.path must name a .npz file (with x_train, y_train, x_test, y_test) for data.name 'npz'."
        ]
    if not _is_file(path):
        return [f"data.path {config.path!r}: no such file."]
    try:
        with _load_npz(path) as f:
            missing = [k for k in NPZ_KEYS if k not in f.files]
    except (OSError, ValueError, tf.errors.OpError) as e:
        return [f"data.path {config.path!r} is not a readable .npz file: {e}"]
    if missing:
        return [f"data.path {config.path!r} lacks the arrays {missing} (needs {list(NPZ_KEYS)})."]
    return []


@register_dataset("npz", defaults={"path": "", "num_classes": 0}, check=_check_npz)
def npz(config: Any) -> Splits:
    """A NumPy .npz file holding x_train, y_train, x_test, y_test (no pickles).
    uint8 inputs are scaled to float32 in [0, 1]; `num_classes` 0 means
    max(label) + 1."""
    with _load_npz(config.path) as f:
        x_train, y_train, x_test, y_test = (f[k] for k in NPZ_KEYS)
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise ValueError(
            f"data.path {config.path!r}: x_train/y_train hold {len(x_train)}/{len(y_train)} "
            f"examples and x_test/y_test {len(x_test)}/{len(y_test)}; each pair must match."
        )
    num_classes = config.num_classes or int(max(y_train.max(), y_test.max())) + 1
    return Splits(
        train=(_to_float(x_train), y_train.astype(np.int64)),
        test=(_to_float(x_test), y_test.astype(np.int64)),
        input_shape=tuple(x_train.shape[1:]),
        num_classes=num_classes,
    )


# -- synthetic -----------------------------------------------------------------


def _check_synthetic(config: Any) -> list[str]:
    problems = []
    shape = tuple(config.input_shape)
    if not shape or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in shape):
        problems.append(f"data.input_shape must be positive ints; received {shape!r}.")
    if config.num_classes < 2:
        problems.append(f"data.num_classes must be >= 2; received {config.num_classes}.")
    for key in ("num_train", "num_test"):
        if config[key] < 1:
            problems.append(f"data.{key} must be >= 1; received {config[key]}.")
    if config.dtype not in ("float32", "int32"):
        problems.append(
            f"data.dtype must be one of ['float32', 'int32']; received {config.dtype!r}."
        )
    elif config.dtype == "int32" and config.vocab_size < 2:
        problems.append(
            f'data.vocab_size must be >= 2 with data.dtype "int32"; received {config.vocab_size}.'
        )
    return problems


@register_dataset(
    "synthetic",
    defaults={
        "input_shape": (28, 28),
        "num_classes": 10,
        "num_train": 1024,
        "num_test": 256,
        "dtype": "float32",
        "vocab_size": 0,
        "seed": 0,
    },
    check=_check_synthetic,
)
def synthetic(config: Any) -> Splits:
    """Deterministic random classification data of any shape (benchmarks, tests).

    float32: standard-normal inputs, labelled by a fixed random linear teacher
    (learnable). int32: token ids in [0, vocab_size), labelled by the first
    token modulo `num_classes`. The same `seed` gives the same data.
    """
    rng = np.random.default_rng(config.seed)
    shape = tuple(config.input_shape)
    total = config.num_train + config.num_test
    if config.dtype == "int32":
        x = rng.integers(0, config.vocab_size, size=(total, *shape)).astype(np.int32)
        y = x.reshape(total, -1)[:, 0].astype(np.int64) % config.num_classes
    else:
        x = rng.standard_normal((total, *shape)).astype(np.float32)
        teacher = rng.standard_normal((int(np.prod(shape)), config.num_classes)).astype(np.float32)
        y = np.argmax(x.reshape(total, -1) @ teacher, axis=1).astype(np.int64)
    n = config.num_train
    return Splits(
        train=(x[:n], y[:n]), test=(x[n:], y[n:]), input_shape=shape, num_classes=config.num_classes
    )


# -- tfds ----------------------------------------------------------------------


def _check_tfds(config: Any) -> list[str]:
    problems = []
    if not config.tfds_name:
        problems.append(
            "data.tfds_name must name a TFDS dataset (e.g. 'cifar10') for data.name 'tfds'."
        )
    if importlib.util.find_spec("tensorflow_datasets") is None:
        problems.append(
            "data.name 'tfds' needs tensorflow_datasets: pip install 'tfk_trainer[tfds]'."
        )
    if config.data_dir and not config.download and not _is_dir(config.data_dir):
        problems.append(
            f"data.data_dir {config.data_dir!r} is not a directory (and data.download is False, "
            "so nothing would be downloaded into it)."
        )
    if config.validation_split and "[" in config.train_split:
        problems.append(
            f"data.validation_split must be 0 when data.train_split ({config.train_split!r}) is "
            "already sliced; slice the validation part yourself with data.validation_split = 0."
        )
    return problems


@register_dataset(
    "tfds",
    defaults={
        "tfds_name": "",
        "data_dir": "",
        "train_split": "train",
        "test_split": "test",
        "download": False,
    },
    check=_check_tfds,
)
def tfds_dataset(config: Any) -> Splits:
    """A TensorFlow Datasets dataset with supervised keys (e.g. cifar10), loaded with
    `tfds.load(..., as_supervised=True)`. uint8 images are scaled to float32
    in [0, 1]. With `download` False (the default) it reads only what is
    already prepared under `data_dir` and never touches the network.
    `validation_split` holds out the end of the training split."""
    import tensorflow_datasets as tfds  # Optional dependency: imported only when used.

    builder = tfds.builder(config.tfds_name, data_dir=config.data_dir or None)
    info = builder.info
    if not info.supervised_keys:
        raise ValueError(
            f"data.tfds_name {config.tfds_name!r} has no supervised keys (input, label); "
            "register your own dataset for it instead."
        )
    input_key, label_key = info.supervised_keys[:2]
    input_shape = tuple(info.features[input_key].shape)
    num_classes = int(info.features[label_key].num_classes)
    splits = {"train": config.train_split, "test": config.test_split}
    if config.validation_split:
        held = int(round(config.validation_split * 100))
        splits["train"] = f"{config.train_split}[:{100 - held}%]"
        splits["validation"] = f"{config.train_split}[{100 - held}%:]"
    names = list(splits)
    try:
        loaded = tfds.load(
            config.tfds_name,
            split=[splits[k] for k in names],
            data_dir=config.data_dir or None,
            as_supervised=True,
            download=config.download,
            shuffle_files=False,
        )
    except AssertionError as e:  # tfds's way of saying "not prepared, and download=False"
        raise FileNotFoundError(
            f"TFDS {config.tfds_name!r} is not prepared under data.data_dir "
            f"{config.data_dir or '(the TFDS default)'!r} and data.download is False: {e}"
        ) from e

    def scale(x, y):
        if x.dtype == tf.uint8:
            x = tf.cast(x, tf.float32) / 255.0
        return x, tf.cast(y, tf.int64)

    datasets = {
        k: ds.map(scale, num_parallel_calls=tf.data.AUTOTUNE) for k, ds in zip(names, loaded)
    }
    return Splits(
        train=datasets["train"],
        test=datasets["test"],
        validation=datasets.get("validation"),
        input_shape=input_shape,
        num_classes=num_classes,
    )


# -- tfrecord ------------------------------------------------------------------

TFRECORD_X, TFRECORD_Y = "x", "y"


def write_tfrecords(
    x: np.ndarray, y: np.ndarray, path_prefix: str, num_shards: int = 4
) -> list[str]:
    """Writes `(x, y)` as `num_shards` TFRecord files the "tfrecord" dataset reads:
    `<path_prefix>-0000i-of-0000n`, example `j` in shard `j % num_shards`, each a
    `tf.train.Example` with `x` (float32, flattened) and `y` (int64). For tests,
    examples and converting small data sets; any gs:// or ram:// prefix works
    (written through `tf.io.TFRecordWriter`).
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    paths = [f"{path_prefix}-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    try:
        for j in range(len(x)):
            features = {
                TFRECORD_X: tf.train.Feature(float_list=tf.train.FloatList(value=x[j].ravel())),
                TFRECORD_Y: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y[j])])),
            }
            example = tf.train.Example(features=tf.train.Features(feature=features))
            writers[j % num_shards].write(example.SerializeToString())
    finally:
        for writer in writers:
            writer.close()
    return paths


def _check_tfrecord(config: Any) -> list[str]:
    problems = []
    for key in ("train_pattern", "test_pattern"):
        pattern = config[key]
        if not pattern:
            problems.append(f"data.{key} must be a TFRecord file pattern for data.name 'tfrecord'.")
        elif not tf.io.gfile.glob(pattern):
            problems.append(f"data.{key} {pattern!r} matches no file.")
    shape = tuple(config.input_shape)
    if not shape or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in shape):
        problems.append(f"data.input_shape must be positive ints; received {shape!r}.")
    if config.num_classes < 2:
        problems.append(f"data.num_classes must be >= 2; received {config.num_classes}.")
    if config.validation_pattern and not tf.io.gfile.glob(config.validation_pattern):
        problems.append(f"data.validation_pattern {config.validation_pattern!r} matches no file.")
    return problems


def tfrecord_files(pattern: str, input_shape: tuple[int, ...]) -> tf.data.Dataset:
    """Unbatched `(x, y)` from TFRecord files of `tf.train.Example`s (`write_tfrecords`).

    The pipeline starts from the file list, in a fixed order, and carries the
    FILE auto-shard policy: under several workers each host opens only its
    own files (`i::num_workers`), so no host reads another's data. There must
    be at least as many files as workers.
    """
    size = int(np.prod(input_shape))
    spec = {
        TFRECORD_X: tf.io.FixedLenFeature([size], tf.float32),
        TFRECORD_Y: tf.io.FixedLenFeature([], tf.int64),
    }

    def parse(record):
        example = tf.io.parse_single_example(record, spec)
        return tf.reshape(example[TFRECORD_X], input_shape), example[TFRECORD_Y]

    files = tf.data.Dataset.list_files(pattern, shuffle=False)
    dataset = files.interleave(
        tf.data.TFRecordDataset,
        cycle_length=4,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    ).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.FILE
    return dataset.with_options(options)


@register_dataset(
    "tfrecord",
    defaults={
        "train_pattern": "",
        "test_pattern": "",
        "validation_pattern": "",
        "input_shape": (28, 28),
        "num_classes": 10,
    },
    check=_check_tfrecord,
)
def tfrecord(config: Any) -> Splits:
    """TFRecord files of `tf.train.Example`s with `x` (float32, `input_shape`
    flattened) and `y` (an int64 label), e.g. written by `write_tfrecords`:
    `data.train_pattern`, `data.test_pattern` and the optional
    `data.validation_pattern` are file patterns (gs:// too); files are never
    split, so `data.validation_split` holds nothing out here. Under
    multi-worker training each host reads only its own files."""
    shape = tuple(config.input_shape)
    validation = config.validation_pattern
    return Splits(
        train=tfrecord_files(config.train_pattern, shape),
        test=tfrecord_files(config.test_pattern, shape),
        validation=tfrecord_files(validation, shape) if validation else None,
        input_shape=shape,
        num_classes=int(config.num_classes),
    )
