"""`History`: the record `fit` returns."""

from __future__ import annotations

from tfk_trainer.callbacks.base import Callback


class History(Callback):
    """Records epoch logs; `history[key]` is a list with one value per epoch run.

    `epoch` holds absolute epoch indices (so a run started at `initial_epoch=2`
    records 2, 3, ...). The model's `history` attribute points at the latest one.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs=None):
        self.epoch = []
        self.history = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)
        if self.model is not None:
            self.model.history = self
