"""Fashion-MNIST loader that reads the original IDX ``.gz`` files from disk.

``keras.datasets.fashion_mnist.load_data()`` downloads the data on first use, which
fails on machines that cannot reach its host. This loader never downloads: it reads
the four files from a local folder (by default where the Debian package
``dataset-fashion-mnist`` installs them) and explains how to get them if they are
missing.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

__all__ = ["load_fashion_mnist", "DEFAULT_SEARCH_DIRS", "ENV_VAR", "FILES"]

#: Environment variable naming a folder that holds the four files.
ENV_VAR = "TFK_FASHION_MNIST_DIR"

#: Folders searched, in order, when neither ``data_dir`` nor ``$TFK_FASHION_MNIST_DIR``
#: is given.
#: The first is where Debian's ``dataset-fashion-mnist`` puts the files; the second is
#: where ``keras.datasets.fashion_mnist`` caches them.
DEFAULT_SEARCH_DIRS: tuple[str, ...] = (
    "/usr/share/datasets/fashion-mnist",
    os.path.join("~", ".keras", "datasets", "fashion-mnist"),
)

#: The four file names, as published by Zalando Research and shipped by Debian.
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

# IDX magic numbers: 0x00000803 (unsigned byte, 3 dims) and 0x00000801 (1 dim).
_IMAGES_MAGIC = 2051
_LABELS_MAGIC = 2049
_IMAGES_HEADER_BYTES = 16  # magic, count, rows, cols: four big-endian int32.
_LABELS_HEADER_BYTES = 8  # magic, count.
_IMAGE_SIDE = 28
_NUM_CLASSES = 10

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _candidate_dirs(data_dir: str | os.PathLike[str] | None) -> list[str]:
    """Returns the folders to try, in order.

    An explicit choice (the argument, else the environment variable) is the only
    folder tried: silently falling back to another copy would hide a typo.
    """
    if data_dir is not None:
        candidates = [os.fspath(data_dir)]
    elif os.environ.get(ENV_VAR):
        candidates = [os.environ[ENV_VAR]]
    else:
        candidates = list(DEFAULT_SEARCH_DIRS)
    # URLs (gs://, ram://) are kept as given; only local paths get `~` expanded.
    return [path if "://" in path else os.path.expanduser(path) for path in candidates]


def _has_all_files(folder: str) -> bool:
    return all(
        tf.io.gfile.exists(folder.rstrip("/") + "/" + name)
        and not tf.io.gfile.isdir(folder.rstrip("/") + "/" + name)
        for name in FILES.values()
    )


def _missing_data_message(tried: Sequence[str]) -> str:
    tried_lines = "\n".join(f"  - {path}" for path in tried)
    files = ", ".join(FILES.values())
    return (
        "Fashion-MNIST data not found. This loader reads local files and never "
        "downloads. To get the data, either:\n"
        "  * install the Debian package:\n"
        "      sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist\n"
        "    (it puts the files in /usr/share/datasets/fashion-mnist; "
        "`bash tools/setup_env.sh` does this for you), or\n"
        f"  * put the four files ({files}) in one folder and set "
        f"{ENV_VAR}=/that/folder (or pass data_dir=...).\n"
        f"Folders tried (each must hold all four files):\n{tried_lines}"
    )


def _read_gz(path: str) -> bytes:
    """Reads a whole gzip file, turning decompression errors into ValueError."""
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        # gzip.BadGzipFile is an OSError; a truncated stream raises EOFError.
        raise ValueError(f"{path}: not a readable gzip file ({e})") from e


def _header(data: bytes, path: str, magic: int, kind: str, num_ints: int) -> list[int]:
    """Checks the IDX magic number, then returns the header's ``num_ints`` int32s.

    The magic number is checked before the header length so that a wrong kind of
    file (e.g. a label file where images belong) is reported as such.
    """
    if len(data) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    found = int(np.frombuffer(data, dtype=">i4", count=1)[0])
    if found != magic:
        raise ValueError(f"{path}: bad IDX magic number {found} for {kind} file (expected {magic})")
    if len(data) < 4 * num_ints:
        raise ValueError(
            f"{path}: too short for an IDX header ({len(data)} bytes, need {4 * num_ints})"
        )
    return [int(v) for v in np.frombuffer(data, dtype=">i4", count=num_ints)]


def _read_images(path: str) -> np.ndarray:
    """Reads an IDX3 image file into a uint8 array of shape (n, 28, 28)."""
    data = _read_gz(path)
    _, count, rows, cols = _header(data, path, _IMAGES_MAGIC, "an image", 4)
    if (rows, cols) != (_IMAGE_SIDE, _IMAGE_SIDE):
        raise ValueError(f"{path}: images are {rows}x{cols}, expected {_IMAGE_SIDE}x{_IMAGE_SIDE}")
    expected = _IMAGES_HEADER_BYTES + count * rows * cols
    if count < 0 or len(data) != expected:
        raise ValueError(
            f"{path}: header says {count} images ({expected} bytes) but the file "
            f"holds {len(data)} bytes"
        )
    pixels = np.frombuffer(data, dtype=np.uint8, offset=_IMAGES_HEADER_BYTES)
    return pixels.reshape(-1, _IMAGE_SIDE, _IMAGE_SIDE)


def _read_labels(path: str) -> np.ndarray:
    """Reads an IDX1 label file into an int64 array of shape (n,)."""
    data = _read_gz(path)
    _, count = _header(data, path, _LABELS_MAGIC, "a label", 2)
    expected = _LABELS_HEADER_BYTES + count
    if count < 0 or len(data) != expected:
        raise ValueError(
            f"{path}: header says {count} labels ({expected} bytes) but the file "
            f"holds {len(data)} bytes"
        )
    labels = np.frombuffer(data, dtype=np.uint8, offset=_LABELS_HEADER_BYTES)
    if labels.size and labels.max() >= _NUM_CLASSES:
        raise ValueError(f"{path}: label {int(labels.max())} out of range [0, {_NUM_CLASSES - 1}]")
    return labels.astype(np.int64)


def _load_split(folder: str, images_key: str, labels_key: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = os.path.join(folder, FILES[images_key])
    labels_path = os.path.join(folder, FILES[labels_key])
    images = _read_images(images_path)
    labels = _read_labels(labels_path)
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    return images, labels


def load_fashion_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    normalize: bool = True,
) -> Arrays:
    """Loads Fashion-MNIST from local IDX ``.gz`` files.

    Same layout as ``keras.datasets.fashion_mnist.load_data()`` so code can switch
    between them, but it reads from disk only, so it works offline.

    Where the files are looked for, in order of precedence: ``data_dir`` if given,
    else ``$TFK_FASHION_MNIST_DIR`` if set (an explicit choice is the only folder
    tried, so a wrong path fails loudly instead of silently loading another copy),
    else the first of ``/usr/share/datasets/fashion-mnist`` (Debian package
    ``dataset-fashion-mnist``) and ``~/.keras/datasets/fashion-mnist`` (the Keras
    download cache) that holds all four files.

    Args:
      data_dir: Folder holding ``train-images-idx3-ubyte.gz``,
        ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and
        ``t10k-labels-idx1-ubyte.gz``. ``None`` searches the default places.
      normalize: If true, images are float32 scaled to [0, 1] (what a network
        wants); if false, the raw uint8 pixels (what Keras' loader returns).

    Returns:
      ``((x_train, y_train), (x_test, y_test))`` with images of shape
      ``(n, 28, 28)`` (60000 train, 10000 test) and int64 labels in [0, 9].

    Raises:
      FileNotFoundError: No folder holds all four files; the message says how to
        get them and lists the folders tried.
      ValueError: A file is not valid gzip/IDX (bad magic number, size that does
        not match its header, out-of-range label) or the image and label counts
        of a split differ. The message names the file.
    """
    tried = _candidate_dirs(data_dir)
    folder = next((d for d in tried if _has_all_files(d)), None)
    if folder is None:
        raise FileNotFoundError(_missing_data_message(tried))

    x_train, y_train = _load_split(folder, "train_images", "train_labels")
    x_test, y_test = _load_split(folder, "test_images", "test_labels")
    if normalize:
        x_train = x_train.astype(np.float32) / np.float32(255.0)
        x_test = x_test.astype(np.float32) / np.float32(255.0)
    else:
        # frombuffer views are read-only; hand back ordinary writable arrays.
        x_train, x_test = x_train.copy(), x_test.copy()
    return (x_train, y_train), (x_test, y_test)
