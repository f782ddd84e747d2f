"""Tests for tfk_trainer.datasets.load_fashion_mnist (offline IDX reader)."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest
from tolerances import ATOL

from tfk_trainer.datasets import fashion_mnist, load_fashion_mnist

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"


def _debian_data_present() -> bool:
    return all(os.path.isfile(os.path.join(DEBIAN_DIR, f)) for f in fashion_mnist.FILES.values())


requires_debian_data = pytest.mark.skipif(
    not _debian_data_present(),
    reason=f"Fashion-MNIST not in {DEBIAN_DIR}; apt-get install dataset-fashion-mnist",
)


def _write_gz(path, payload: bytes) -> None:
    with gzip.open(path, "wb") as f:
        f.write(payload)


def _write_split(folder, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    n = images.shape[0]
    _write_gz(
        folder / f"{prefix}-images-idx3-ubyte.gz",
        struct.pack(">iiii", 2051, n, 28, 28) + images.astype(np.uint8).tobytes(),
    )
    _write_gz(
        folder / f"{prefix}-labels-idx1-ubyte.gz",
        struct.pack(">ii", 2049, len(labels)) + labels.astype(np.uint8).tobytes(),
    )


@pytest.fixture
def tiny_dir(tmp_path, monkeypatch):
    """A folder with valid, tiny IDX files: 5 train and 3 test examples."""
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    rng = np.random.default_rng(0)
    _write_split(tmp_path, "train", rng.integers(0, 256, (5, 28, 28)), np.array([9, 0, 0, 3, 1]))
    _write_split(tmp_path, "t10k", rng.integers(0, 256, (3, 28, 28)), np.array([2, 7, 5]))
    return tmp_path


@requires_debian_data
def test_real_data_shapes_dtypes_and_first_labels():
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(DEBIAN_DIR)
    assert x_train.shape == (60000, 28, 28)
    assert x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,)
    assert y_test.shape == (10000,)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert x_train.max() == 1.0
    np.testing.assert_array_equal(y_train[:10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
    # Balanced classes: 6000 train and 1000 test images per class.
    np.testing.assert_array_equal(np.bincount(y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)


@requires_debian_data
def test_real_data_default_search_finds_debian_files(monkeypatch):
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    (x_train, _), (x_test, _) = load_fashion_mnist(normalize=False)
    assert x_train.dtype == np.uint8
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)


def test_tiny_files_round_trip(tiny_dir):
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(tiny_dir, normalize=False)
    assert x_train.shape == (5, 28, 28) and x_test.shape == (3, 28, 28)
    assert x_train.dtype == np.uint8
    assert x_train.flags.writeable
    np.testing.assert_array_equal(y_train, [9, 0, 0, 3, 1])
    np.testing.assert_array_equal(y_test, [2, 7, 5])

    (xn_train, _), _ = load_fashion_mnist(tiny_dir)
    assert xn_train.dtype == np.float32
    np.testing.assert_allclose(xn_train, x_train / 255.0, rtol=1e-6, atol=ATOL)


def test_env_var_is_used(tiny_dir, monkeypatch):
    monkeypatch.setenv(fashion_mnist.ENV_VAR, str(tiny_dir))
    (x_train, _), _ = load_fashion_mnist()
    assert x_train.shape == (5, 28, 28)


def test_missing_dir_raises_file_not_found_with_instructions(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist(missing)
    message = str(info.value)
    assert "apt-get install" in message
    assert "dataset-fashion-mnist" in message
    assert fashion_mnist.ENV_VAR in message
    assert str(missing) in message


def test_explicit_dir_does_not_fall_back(tmp_path, monkeypatch):
    # Even when the Debian copy exists, a wrong explicit folder must fail loudly.
    monkeypatch.setenv(fashion_mnist.ENV_VAR, str(tmp_path / "also-missing"))
    with pytest.raises(FileNotFoundError, match="also-missing"):
        load_fashion_mnist()


def test_not_gzip_raises_value_error_naming_file(tiny_dir):
    bad = tiny_dir / "train-images-idx3-ubyte.gz"
    bad.write_bytes(b"this is not gzip data")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        load_fashion_mnist(tiny_dir)


def test_truncated_gzip_raises_value_error(tiny_dir):
    path = tiny_dir / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:12])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz"):
        load_fashion_mnist(tiny_dir)


def test_bad_magic_raises_value_error(tiny_dir):
    # A label file where an image file should be: valid gzip, wrong IDX magic.
    _write_gz(tiny_dir / "train-images-idx3-ubyte.gz", struct.pack(">ii", 2049, 1) + b"\x00")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz.*magic"):
        load_fashion_mnist(tiny_dir)


def test_size_not_matching_header_raises_value_error(tiny_dir):
    _write_gz(
        tiny_dir / "t10k-images-idx3-ubyte.gz",
        struct.pack(">iiii", 2051, 4, 28, 28) + bytes(3 * 28 * 28),
    )
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        load_fashion_mnist(tiny_dir)


def test_count_mismatch_between_images_and_labels_raises(tiny_dir):
    _write_gz(tiny_dir / "train-labels-idx1-ubyte.gz", struct.pack(">ii", 2049, 4) + bytes(4))
    with pytest.raises(ValueError, match="5 images.*4 labels"):
        load_fashion_mnist(tiny_dir)


def test_out_of_range_label_raises(tiny_dir):
    _write_gz(tiny_dir / "t10k-labels-idx1-ubyte.gz", struct.pack(">ii", 2049, 3) + b"\x01\x0a\x02")
    with pytest.raises(ValueError, match="label 10"):
        load_fashion_mnist(tiny_dir)
