"""Input pipelines: every input kind the Keras 3 API docs name, as a batched tf.data.Dataset."""

from tfk_trainer.data.adapters import ArrayAdapter, DatasetAdapter, train_validation_split
from tfk_trainer.data.base import DataAdapter
from tfk_trainer.data.factory import get_adapter
from tfk_trainer.data.functions import DatasetFunction, DatasetFunctionAdapter
from tfk_trainer.data.py_dataset import PyDataset
from tfk_trainer.data.python_sources import GeneratorAdapter, PyDatasetAdapter
from tfk_trainer.data.structure import pack_x_y_sample_weight, unpack_x_y_sample_weight

__all__ = [
    "ArrayAdapter",
    "DataAdapter",
    "DatasetAdapter",
    "DatasetFunction",
    "DatasetFunctionAdapter",
    "GeneratorAdapter",
    "PyDataset",
    "PyDatasetAdapter",
    "get_adapter",
    "pack_x_y_sample_weight",
    "train_validation_split",
    "unpack_x_y_sample_weight",
]
