"""Synthetic Lorenz spiking datasets, as LFADS.Utils.generateDemoDatasets makes them (reference §9.1).

Every condition is one Lorenz trajectory shared by all datasets; each dataset reads it out through
its own random loading matrix into Poisson spikes. MATLAB's mt19937ar stream cannot be reproduced
bit for bit, so the numbers differ from the MATLAB files; the recipe is the same and the output is
reproducible for a given seed.

Storage (so a full-size dataset is a few MB instead of ~0.5 GB):
  spikes                   uint8, nTrials x nChannels x nBins (0/1 at the default 1 ms bins)
  true_rates_by_condition  float32, nConditions x nChannels x nBins: the expected spike count per bin
                           of the spikes actually stored, sum of (1 - exp(-rate)) over the bin's 1 ms
                           draws. The original stored the Poisson rate itself, but its spikes are
                           Poisson > 0 (at most one per ms), so on channels whose rate saturates that
                           "truth" is up to e^20 times what the data can show, and no fit can match it.
                           The rate itself is W, b and lorenz_trajectories, all stored.
  conditionId              nTrials x 1, 1-based index into the conditions
  generator_settings       JSON text: the seed and every LorenzSizes knob the file was made with, so
                           `only_missing` can tell a file made with other settings from a reusable one
The dataset loader expands the truth to trials through `conditionId`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from manager.errors import ManagerError
from manager.matfile import write_mat

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0
# MATLAB datenum of 2017-11-07, a fixed stand-in for the original's "today" so files are reproducible.
_BASE_DATENUM = 737006.0


@dataclass(frozen=True)
class LorenzSizes:
    """Size knobs; the defaults are the original's (1300-1950 trials of 25-35 channels, 1 s at 1 ms)."""

    n_conditions: int = 65
    min_trials_per_condition: int = 20
    max_trials_per_condition: int = 30
    min_channels: int = 25
    max_channels: int = 35
    n_time: int = 1000
    burn_in: int = 500
    dt: float = 0.006
    mean_rate_hz: float = 5.0
    # Width of the stored bins in ms: spikes are drawn per 1 ms and summed into bins this wide
    # (1 = the original's 0/1 spikes). Coarser bins make files and exports much smaller.
    bin_ms: int = 1

    def __post_init__(self) -> None:
        """Refuse knobs that would crash the generator or make data no run can use (one-line errors)."""
        for name in ("n_conditions", "min_trials_per_condition", "min_channels", "bin_ms"):
            self._whole(name, 1)
        self._whole("burn_in", 0)
        if self.bin_ms > 255:  # spikes are stored as uint8 counts per bin
            raise _knob_error("bin_ms", self.bin_ms, "at most 255")
        # bounds that depend on other knobs come after those are checked (and cast to int)
        self._whole("max_trials_per_condition", self.min_trials_per_condition)
        self._whole("max_channels", self.min_channels)
        self._whole("n_time", 2 * self.bin_ms, " (two bins of bin_ms)")
        for name in ("dt", "mean_rate_hz"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise _knob_error(name, value, "a positive number")
            object.__setattr__(self, name, float(value))

    def _whole(self, name: str, low: int, why: str = "") -> None:
        value = getattr(self, name)
        if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
                or value != int(value) or value < low):
            raise _knob_error(name, value, f"a whole number >= {low}{why}")
        object.__setattr__(self, name, int(value))

    def settings(self, seed: int) -> dict[str, Any]:
        """What a generated file records: the seed and every knob (they determine its content)."""
        return {"seed": int(seed), **asdict(self)}


def _knob_error(name: str, value: object, expected: str) -> ManagerError:
    return ManagerError(None, f"Lorenz knob {name} must be {expected}, got {value!r}",
                        f"set another value (lfads-manager demo --lorenz {name}=VALUE)")


def lorenz_trajectories(n_conditions: int, n_time: int, burn_in: int, dt: float, rng: np.random.Generator) -> np.ndarray:
    """Normalised Lorenz trajectories, 3 x nTime x nConditions (the layout of `lorenz_trajectories`)."""
    state = rng.standard_normal((n_conditions, 3)) + np.array([0.0, 0.0, 25.0])
    out = np.empty((n_conditions, 3, n_time))
    with np.errstate(over="ignore", invalid="ignore"):  # a too large dt diverges: reported below, once
        for step in range(burn_in + n_time):
            if step >= burn_in:
                out[:, :, step - burn_in] = state
            x, y, z = state[:, 0], state[:, 1], state[:, 2]
            # Forward Euler on the full equations (one published version of the generator dropped -y).
            derivative = np.stack([SIGMA * (y - x), x * (RHO - z) - y, x * y - BETA * z], axis=1)
            state = state + dt * derivative
    if not np.isfinite(out).all():
        raise ManagerError(None, f"the Lorenz system diverged with dt={dt:g}", "use a smaller dt (the original's is 0.006)")
    out -= out.mean(axis=2, keepdims=True)
    out /= out.max(axis=2, keepdims=True)
    return np.transpose(out, (1, 2, 0))


def _dataset_fields(index: int, trajectories: np.ndarray, sizes: LorenzSizes, rng: np.random.Generator,
                    settings: dict[str, Any]) -> dict[str, object]:
    n_conditions = trajectories.shape[2]
    n_channels = int(rng.integers(sizes.min_channels, sizes.max_channels + 1))
    # One count per dataset, the same for every condition (generateDemoDatasets' nTrialsCByDataset).
    trials_per_condition = np.full(n_conditions, rng.integers(sizes.min_trials_per_condition, sizes.max_trials_per_condition + 1))
    loading = (rng.random((n_channels, 3)) + 1.0) * np.sign(rng.standard_normal((n_channels, 3)))
    loading = loading[np.argsort(loading[:, 0], kind="stable")]  # sortrows by column 1 (issue #18)
    bias = np.full(n_channels, np.log(sizes.mean_rate_hz / 1000.0))
    # rates[c] = exp(clip(W x_c + b)), spikes per 1 ms bin
    log_rates = np.einsum("nk,ktc->cnt", loading, trajectories) + bias[None, :, None]
    rates = np.exp(np.clip(log_rates, -20.0, 20.0))
    condition_id = np.repeat(np.arange(1, n_conditions + 1), trials_per_condition)
    width = int(sizes.bin_ms)
    n_bins = sizes.n_time // width
    spikes = np.empty((condition_id.size, n_channels, n_bins), dtype=np.uint8)
    # Poisson(rate) > 0 is a Bernoulli draw with p = 1 - exp(-rate); drawing it directly is cheaper.
    p_spike = -np.expm1(-rates[:, :, : n_bins * width])
    for condition in range(n_conditions):
        rows = np.flatnonzero(condition_id == condition + 1)
        drawn = rng.random((rows.size, n_channels, n_bins * width)) < p_spike[condition]
        spikes[rows] = drawn.reshape(rows.size, n_channels, n_bins, width).sum(axis=3)
    expected_counts = p_spike.reshape(n_conditions, n_channels, n_bins, width).sum(axis=3)
    return {
        "spikes": spikes,
        "timeMs": np.arange(n_bins, dtype=np.float64) * width,
        "conditionId": condition_id.astype(np.float64),
        "datetime": _BASE_DATENUM + index,
        "subject": "lorenz_example",
        "W": loading,
        "b": bias,
        "lorenz_trajectories": trajectories,
        "true_rates_by_condition": expected_counts.astype(np.float32),
        "generator_settings": json.dumps(settings, sort_keys=True),
    }


def dataset_path(directory: Path, index: int) -> Path:
    """`directory/dataset00N.mat` for 1-based `index`."""
    return Path(directory) / f"dataset{index:03d}.mat"


def recorded_settings(path: Path) -> dict[str, Any] | None:
    """The generator settings a file records; None when it has none or cannot be read."""
    try:
        raw = scipy.io.loadmat(path, variable_names=["generator_settings"]).get("generator_settings")
        settings = json.loads(str(raw[0])) if raw is not None and raw.size else None
    except Exception:  # unreadable or not ours: the caller reports it as "not made with these settings"
        return None
    return settings if isinstance(settings, dict) else None


def _check_reusable(path: Path, wanted: dict[str, Any]) -> None:
    """A file is reused only when it was made with the same settings: a dataset made with other
    bins or sizes next to new ones would mix bin widths, or keep failing the same check."""
    found = recorded_settings(path)
    if found == wanted:
        return
    if found is None:
        problem = "has no record of the Lorenz settings it was made with (an older lfads-manager made it, or not the generator)"
    else:
        changed = ", ".join(f"{key}={found.get(key)!r} there, {value!r} now" for key, value in wanted.items() if found.get(key) != value)
        problem = f"was made with other Lorenz settings ({changed})"
    raise ManagerError(path, problem, f"use another folder, or delete {path.parent} so that it is generated again")


def generate_lorenz_datasets(
    directory: Path | str,
    n_datasets: int = 3,
    seed: int = 0,
    sizes: LorenzSizes | None = None,
    only_missing: bool = False,
    **size_knobs: float,
) -> list[Path]:
    """Write `dataset001.mat … dataset00N.mat` into `directory` and return their paths.

    Size knobs are the fields of `LorenzSizes` (e.g. ``n_conditions=8, n_time=200``). Each dataset
    has its own child seed, so dataset k is the same whatever `n_datasets` is, and with
    `only_missing=True` existing files are kept untouched; they must have been made with the same
    seed and knobs (ManagerError otherwise, before anything is written).
    """
    sizes = sizes or LorenzSizes()
    if size_knobs:
        sizes = LorenzSizes(**{**sizes.__dict__, **size_knobs})
    directory = Path(directory)
    condition_seed, *dataset_seeds = np.random.SeedSequence(seed).spawn(n_datasets + 1)
    paths = [dataset_path(directory, index) for index in range(1, n_datasets + 1)]
    settings = sizes.settings(seed)
    if only_missing:
        for path in paths:  # all of them before writing any
            if path.exists():
                _check_reusable(path, settings)
        if all(path.exists() for path in paths):
            return paths
    trajectories = lorenz_trajectories(
        sizes.n_conditions, sizes.n_time, sizes.burn_in, sizes.dt, np.random.default_rng(condition_seed)
    )
    directory.mkdir(parents=True, exist_ok=True)  # only once the settings proved usable
    for index, (path, child) in enumerate(zip(paths, dataset_seeds, strict=True), start=1):
        if only_missing and path.exists():
            continue
        write_mat(path, _dataset_fields(index, trajectories, sizes, np.random.default_rng(child), settings))
    return paths
