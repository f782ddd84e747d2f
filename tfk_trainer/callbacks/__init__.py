"""Callbacks: Keras's hooks, dispatched by our own `CallbackList`."""

from tfk_trainer.callbacks.base import Callback, CallbackList, LazyLogs
from tfk_trainer.callbacks.checkpoint import (
    PREEMPTED_EXIT_CODE,
    BackupAndRestore,
    ModelCheckpoint,
    Preempted,
)
from tfk_trainer.callbacks.csv_logger import CSVLogger
from tfk_trainer.callbacks.early_stopping import EarlyStopping
from tfk_trainer.callbacks.history import History
from tfk_trainer.callbacks.learning_rate import LearningRateScheduler, ReduceLROnPlateau
from tfk_trainer.callbacks.misc import LambdaCallback, TerminateOnNaN
from tfk_trainer.callbacks.progbar import ProgbarLogger
from tfk_trainer.callbacks.tensorboard import TensorBoard

__all__ = [
    "BackupAndRestore",
    "ModelCheckpoint",
    "PREEMPTED_EXIT_CODE",
    "Preempted",
    "Callback",
    "CallbackList",
    "History",
    "LazyLogs",
    "ProgbarLogger",
    "CSVLogger",
    "EarlyStopping",
    "LambdaCallback",
    "LearningRateScheduler",
    "ReduceLROnPlateau",
    "TerminateOnNaN",
    "TensorBoard",
]
