"""Run: one (RunSpec x RunParams) cell of a collection, i.e. one LFADS model and its folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from manager.export import input_info_file_name, lfads_file_name
from manager.params import RunParams
from manager.runspec import RunSpec
from runqueue.layout import RunPaths

if TYPE_CHECKING:
    from manager.collection import RunCollection


@dataclass(frozen=True, eq=False)
class Run:
    collection: RunCollection
    spec: RunSpec
    params: RunParams

    def __repr__(self) -> str:
        return f"Run({self.rel_dir!r})"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def rel_dir(self) -> str:
        """`param_<hash>/<spec>`, relative to the collection folder."""
        return f"{self.params.param_hash_name}/{self.spec.name}"

    @property
    def path(self) -> Path:
        return self.collection.path / self.params.param_hash_name / self.spec.name

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.path)

    @property
    def path_common_data(self) -> Path:
        """`data_<hash>/<spec>`: the export shared by every param set with this data hash."""
        return self.collection.path / self.params.data_hash_name / self.spec.name

    @property
    def n_datasets(self) -> int:
        return self.spec.n_datasets

    @property
    def dataset_names(self) -> list[str]:
        return self.spec.dataset_names

    @property
    def uses_alignment(self) -> bool:
        if self.n_datasets > 1:
            return bool(self.params.useAlignmentMatrix)
        return bool(self.params.useSingleDatasetAlignmentMatrix)

    def input_file_names(self) -> list[str]:
        """Every file the run's lfadsInput/ links to, for each dataset."""
        names = []
        for dataset in self.dataset_names:
            names += [lfads_file_name(dataset), input_info_file_name(dataset)]
        return names

    def symlink_targets(self) -> dict[str, str]:
        """lfadsInput entry -> its relative target ../../../data_<h>/<spec>/<file>."""
        prefix = os.path.join("..", "..", "..", self.params.data_hash_name, self.spec.name)
        return {name: os.path.join(prefix, name) for name in self.input_file_names()}
