"""Preparation: datasets + parameter grids -> the LFADS run-folder tree, and loading results back.

    from manager import DatasetCollection, Dataset, RunParams, RunSpec, RunCollection
"""

from manager.collection import RunCollection, StaleResultsWarning
from manager.datasets import Dataset, DatasetCollection, register_loader
from manager.errors import ManagerError
from manager.params import RunParams
from manager.run import Run
from manager.runspec import RunSpec
from manager.sequence import SequenceData

__all__ = [
    "Dataset",
    "DatasetCollection",
    "ManagerError",
    "Run",
    "RunCollection",
    "RunParams",
    "RunSpec",
    "SequenceData",
    "StaleResultsWarning",
    "register_loader",
]
