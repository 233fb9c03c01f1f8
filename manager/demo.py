"""`lfads-manager demo`: Lorenz datasets and a run tree from a profile of `demo_profiles.PROFILES`."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from manager.collection import RunCollection
from manager.datasets import DatasetCollection, minimum_trials
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
    try:
        params = RunParams(**profile["params"])
    except ParamValueError as error:
        import manager.demo_profiles as profiles

        raise ManagerError(profiles.__file__, f"demo profile: {error}", "fix the profile's params") from error
    lorenz_sizes = LorenzSizes(**sizes)  # range-checked: a one-line error instead of a traceback
    _check_profile_fits(lorenz_sizes, params, str(profile["collection"]))
    datasets_dir = directory / "datasets"
    if progress:
        progress(f"Lorenz datasets in {datasets_dir} (only missing ones are generated)")
    # Existing files are reused only when made with these settings; else a one-line error says
    # which setting differs and to use another DIR or delete DIR/datasets (never deleted here).
    try:
        paths = generate_lorenz_datasets(datasets_dir, n_datasets=int(profile["n_datasets"]), seed=seed,
                                         sizes=lorenz_sizes, only_missing=True)
    except MemoryError:
        raise ManagerError(datasets_dir, "the Lorenz knobs ask for more memory than this machine has",
                           "lower n_time, n_conditions, the trials per condition or the channels") from None
    datasets = DatasetCollection(datasets_dir, name=DATASET_COLLECTION_NAME)
    datasets.add_files([path.name for path in paths])
    collection = RunCollection(directory / "runs", str(profile["collection"]), datasets)
    collection.add_params(params)
    for name, one_based in profile["run_specs"].items():
        collection.add_run_spec(RunSpec(name, datasets, [index - 1 for index in one_based]))
    collection.prepare(progress=progress)
    return collection


def _check_profile_fits(sizes: LorenzSizes, params: RunParams, collection: str) -> None:
    """Refuse knobs whose data the profile's params cannot use before any dataset is written; the
    demo's params are not the user's to edit, so the fix names a knob (prepare's would name a param)."""
    needed = minimum_trials(params)
    fewest = sizes.n_conditions * sizes.min_trials_per_condition
    if fewest < needed:
        per_condition = math.ceil(needed / sizes.n_conditions)
        knobs = f"--lorenz min_trials_per_condition={per_condition}"
        if per_condition > sizes.max_trials_per_condition:
            knobs += f" --lorenz max_trials_per_condition={per_condition}"
        raise ManagerError(None, f"the Lorenz knobs give as few as {fewest} trials per dataset (n_conditions x "
                           f"min_trials_per_condition), but demo {collection!r} needs {needed} (c_batch_size="
                           f"{params.c_batch_size}, trainToTestRatio={params.trainToTestRatio})", f"raise them, e.g. {knobs}")
    rebin = params.spikeBinMs / sizes.bin_ms
    if rebin != round(rebin):
        raise ManagerError(None, f"demo {collection!r} bins at spikeBinMs={params.spikeBinMs:g} ms, not a multiple of the "
                           f"Lorenz knob bin_ms={sizes.bin_ms}", "use a bin_ms that divides it, e.g. --lorenz bin_ms=1")
    if sizes.n_time // sizes.bin_ms < round(rebin):
        raise ManagerError(None, f"Lorenz trials of n_time={sizes.n_time} ms are shorter than one spikeBinMs="
                           f"{params.spikeBinMs:g} ms bin of demo {collection!r}",
                           f"raise it, e.g. --lorenz n_time={math.ceil(params.spikeBinMs) * 10}")
