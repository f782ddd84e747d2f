"""`CSVLogger`: streams the epoch logs to a CSV file through `tf.io.gfile` (local or gs://)."""

from __future__ import annotations

import collections.abc
import csv
import os
import warnings
from typing import Any

import numpy as np
import tensorflow as tf

from tfk_trainer import paths
from tfk_trainer.callbacks.base import Callback

# -- CSVLogger -------------------------------------------------------------------


class CSVLogger(Callback):
    """Streams the epoch logs to a CSV file, one row per epoch.

    As Keras's: the columns are `epoch` then the first epoch's keys, sorted;
    when that epoch has no `val_` keys, `val_` twins of every key are added
    (filled with "NA" until validation runs). With `append=True` rows are
    added to an existing file and the header is written only if the file is
    empty or new, so a resumed run continues the same table; a header that
    differs from the existing one is reported with a warning.

    Args:
        filename: The CSV file (local or `gs://`; written through
            `tf.io.gfile`).
        separator: The string between fields.
        append: Add to an existing file instead of overwriting it.
    """

    def __init__(self, filename: str, separator: str = ",", append: bool = False) -> None:
        super().__init__()
        if not isinstance(filename, (str, os.PathLike)):
            raise TypeError(
                f"CSVLogger: `filename` must be a str or path; received filename={filename!r}."
            )
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(
                "CSVLogger: `separator` must be a 1-character string; received "
                f"separator={separator!r}."
            )
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = bool(append)
        self.append_header = True
        self.keys: list[str] | None = None
        self.writer = None
        self.csv_file = None
        self._existing_header: list[str] | None = None

    def _open(self, mode: str):
        # Always tf.io.gfile (local, gs://, ram://): one code path for every file system.
        # GFile does not translate newlines, so the csv module's "\r\n" rows are
        # written as they are, as with open(..., newline="").
        return tf.io.gfile.GFile(self.filename, mode)

    def _exists(self) -> bool:
        return tf.io.gfile.exists(self.filename)

    def on_train_begin(self, logs=None):
        self._existing_header = None
        try:
            if self.append:
                if self._exists():
                    with self._open("r") as f:
                        first = f.readline()
                    self.append_header = not first
                    if first:
                        self._existing_header = next(csv.reader([first], delimiter=self.sep), None)
                mode = "a"
            else:
                mode = "w"
            self._close()
            self.csv_file = self._open(mode)
            self.csv_file.write("")  # GFile opens lazily: open (and fail) now, not after an epoch
        except Exception as e:
            # Before the first epoch, naming the argument (gs:// paths raise TF errors).
            if not isinstance(e, (OSError, tf.errors.OpError)):
                raise
            raise paths.path_error(
                e,
                "filename",
                self.filename,
                action="be opened for writing",
                owner="CSVLogger",
                accepted="Pass a file path in an existing, writable directory.",
            ) from e
        self.writer = None
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs.keys())
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                self.keys.extend(f"val_{k}" for k in list(self.keys))
        if self.writer is None:
            fieldnames = ["epoch"] + self.keys
            if self._existing_header is not None and self._existing_header != fieldnames:
                warnings.warn(
                    f"CSVLogger is appending to {self.filename!r}, whose header "
                    f"{self._existing_header} differs from this run's columns {fieldnames}; "
                    "the new rows follow this run's columns.",
                    stacklevel=2,
                )
            self.writer = csv.DictWriter(
                self.csv_file,
                fieldnames=fieldnames,
                dialect=_dialect(self.sep),
            )
            if self.append_header:
                self.writer.writeheader()
        row = {"epoch": epoch}
        row.update((key, _csv_value(logs.get(key, "NA"))) for key in self.keys)
        self.writer.writerow(row)
        self.csv_file.flush()

    def _close(self) -> None:
        # GFile has no `closed` attribute: the reference is dropped once closed.
        if self.csv_file is not None:
            csv_file, self.csv_file = self.csv_file, None
            csv_file.close()

    def on_train_end(self, logs=None):
        self._close()
        self.writer = None


def _dialect(separator: str) -> type[csv.Dialect]:
    class Dialect(csv.excel):
        delimiter = separator

    return Dialect


def _csv_value(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value
    if isinstance(value, collections.abc.Iterable):
        return f"[{', '.join(map(str, value))}]"
    return value
