"""RunSpec: which datasets go into one model (more than one = a stitched model)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from manager.datasets import Dataset, DatasetCollection
from manager.errors import ManagerError
from runqueue.discovery import SKIPPED_FOLDERS_TEXT, searched_folder_name

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass(frozen=True, eq=False)
class RunSpec:
    """A named selection of datasets from a collection.

    `datasets` may be names (``["dataset001"]``), 0-based indices, a boolean mask over the
    collection, or a single one of those. The name becomes a folder name.

    The selection is kept by dataset name and looked up in the collection at each use: indices and
    masks refer to the collection as it is now, so after `filter_datasets` they would silently
    point at other sessions. A dataset filtered out later is an error, not a substitution.
    """

    name: str
    collection: DatasetCollection
    selected_names: tuple[str, ...]

    def __init__(self, name: str, collection: DatasetCollection, datasets: object = None) -> None:
        if not name or not _SAFE_NAME.match(name) or name in (".", ".."):
            raise ManagerError(None, f"run spec name {name!r} cannot be a folder name", "use letters, digits and _ . + -")
        if not searched_folder_name(name):
            raise ManagerError(None, f"run spec name {name!r} names a folder the queue never looks into ({SKIPPED_FOLDERS_TEXT}),"
                                     " so its runs would never be trained", "choose another name")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "collection", collection)
        indices = _resolve(name, collection, datasets)
        object.__setattr__(self, "selected_names", tuple(collection[index].name for index in indices))

    @property
    def dataset_indices(self) -> tuple[int, ...]:
        """0-based positions of the selected datasets in the collection as it is now."""
        names = self.collection.names
        missing = [ds for ds in self.selected_names if ds not in names]
        if missing:
            raise ManagerError(self.collection.path,
                               f"run spec {self.name!r} uses dataset(s) {', '.join(missing)}, no longer in the collection",
                               "make run specs after filtering the collection, or keep their datasets in it")
        return tuple(names.index(ds) for ds in self.selected_names)

    @property
    def datasets(self) -> list[Dataset]:
        return [self.collection[index] for index in self.dataset_indices]

    @property
    def dataset_names(self) -> list[str]:
        return list(self.selected_names)

    @property
    def n_datasets(self) -> int:
        return len(self.selected_names)

    def same_as(self, other: RunSpec) -> bool:
        """Equal name and datasets: `add_run_spec` replaces such an entry instead of adding it."""
        return self.name == other.name and self.dataset_names == other.dataset_names


def _resolve(spec_name: str, collection: DatasetCollection, selection: object) -> tuple[int, ...]:
    n = len(collection)
    if selection is None:
        return tuple(range(n))
    if isinstance(selection, np.ndarray):  # a numpy mask or index array (np.flatnonzero, ...)
        selection = selection.tolist()
    if isinstance(selection, str | int | np.integer | Dataset):
        selection = [selection]
    if not isinstance(selection, Sequence) or len(selection) == 0:
        raise ManagerError(None, f"run spec {spec_name!r} selects no datasets", "name at least one dataset")
    selection = [bool(item) if isinstance(item, np.bool_) else int(item) if isinstance(item, np.integer) else item
                 for item in selection]
    if all(isinstance(item, bool) for item in selection):
        if len(selection) != n:
            raise ManagerError(None, f"run spec {spec_name!r}: mask has {len(selection)} entries for {n} datasets",
                               "give one true/false per dataset")
        indices = [i for i, keep in enumerate(selection) if keep]
    else:
        indices = []
        for item in selection:
            if isinstance(item, Dataset):
                item = item.name
            if isinstance(item, str):
                if item not in collection.names:
                    known = ", ".join(collection.names) or "none"
                    raise ManagerError(None, f"run spec {spec_name!r} names unknown dataset {item!r} (known: {known})",
                                       "fix the dataset name or add the dataset to the collection")
                indices.append(collection.names.index(item))
            elif isinstance(item, int) and 0 <= item < n:
                indices.append(item)
            else:
                raise ManagerError(None, f"run spec {spec_name!r}: dataset index {item!r} out of range 0..{n - 1}",
                                   "indices are 0-based positions in the dataset collection")
    if not indices:
        raise ManagerError(None, f"run spec {spec_name!r} selects no datasets", "select at least one dataset")
    if len(set(indices)) != len(indices):
        raise ManagerError(None, f"run spec {spec_name!r} lists a dataset twice", "list each dataset once")
    return tuple(indices)
