"""`lfads-manager demo`: Lorenz datasets and a run tree from a profile of `demo_profiles.PROFILES`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from manager.collection import RunCollection
from manager.datasets import DatasetCollection
from manager.errors import ManagerError
from manager.lorenz import LorenzSizes, generate_lorenz_datasets
from manager.matlab_values import ParamValueError
from manager.params import RunParams
from manager.runspec import RunSpec

DATASET_COLLECTION_NAME = "lorenz_example"


def build_demo(
    directory: Path | str,
    profile: str | Mapping[str, Any] = "quick",
    lorenz: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    seed: int = 0,
) -> RunCollection:
    """Write `directory/datasets/dataset00N.mat` (only the missing ones) and prepare
    `directory/runs/<collection>/`. `lorenz` overrides the profile's generator size knobs."""
    from manager.demo_profiles import PROFILES

    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ManagerError(None, f"unknown demo profile {profile!r}", f"use one of {', '.join(PROFILES)}")
        profile = PROFILES[profile]
    directory = Path(directory).expanduser().absolute()
    sizes = {**profile.get("lorenz", {}), **(lorenz or {})}
    unknown = set(sizes) - set(LorenzSizes.__dataclass_fields__)
    if unknown:
        raise ManagerError(None, f"unknown Lorenz size knob(s) {sorted(unknown)}",
                           f"use {', '.join(LorenzSizes.__dataclass_fields__)}")
    datasets_dir = directory / "datasets"
    if progress:
        progress(f"Lorenz datasets in {datasets_dir} (only missing ones are generated)")
    paths = generate_lorenz_datasets(datasets_dir, n_datasets=int(profile["n_datasets"]), seed=seed,
                                     only_missing=True, **sizes)
    datasets = DatasetCollection(datasets_dir, name=DATASET_COLLECTION_NAME)
    datasets.add_files([path.name for path in paths])
    collection = RunCollection(directory / "runs", str(profile["collection"]), datasets)
    try:
        collection.add_params(RunParams(**profile["params"]))
    except ParamValueError as error:
        import manager.demo_profiles as profiles

        raise ManagerError(profiles.__file__, f"demo profile: {error}", "fix the profile's params") from error
    for name, one_based in profile["run_specs"].items():
        collection.add_run_spec(RunSpec(name, datasets, [index - 1 for index in one_based]))
    collection.prepare(progress=progress)
    return collection
