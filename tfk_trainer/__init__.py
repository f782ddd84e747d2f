"""tfk_trainer: the Keras Model training API, natively on TensorFlow.

import tfk_trainer as tfk
model = tfk.Model(keras_network)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
              metrics=["accuracy"], steps_per_execution=16)
model.fit(x, y, epochs=3, validation_split=0.1)
"""

from tfk_trainer import callbacks, data, datasets, distribute
from tfk_trainer import registry as registry  # models/datasets by name (tfk-train configs)
from tfk_trainer.engine.loop import PeerUnavailableError
from tfk_trainer.model import Model, Sequential

__version__ = "0.1.0"

__all__ = [
    "Model",
    "PeerUnavailableError",
    "Sequential",
    "callbacks",
    "data",
    "datasets",
    "distribute",
    "__version__",
]
