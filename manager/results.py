"""Loading what LFADS wrote back: posterior means in the original trial order, and fitlog.csv."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from manager.errors import ManagerError
from manager.export import INPUT_INFO_PREFIX, LFADS_FILE_PREFIX
from manager.export_history import describe_time, retrain_hint, run_stale_since
from manager.matfile import read_mat
from manager.run import Run
from runqueue.layout import LFADS_INPUT, LFADS_OUTPUT

POSTERIOR_KINDS = ("posterior_sample_and_average", "posterior_sample", "posterior_push_mean")
# h5 key -> PosteriorMeans field (the original renames output_dist_params, gen_states, gen_ics)
_RENAMED = {"gen_states": "generator_states", "gen_ics": "generator_ics"}
_KEPT = ("factors", "controller_outputs", "costs", "nll_bound_vaes", "nll_bound_iwaes", "post_g0_mean", "post_g0_logvar")


@dataclass
class PosteriorMeans:
    """One dataset's posterior means, trials in the original order (trials first, as in the h5 files).

    rates are in Hz (output_dist_params in counts per bin x 1000 / spikeBinMs); `rates_per_bin` keeps
    the model's units. Arrays missing from the files (e.g. controller_outputs without a controller) are None.
    """

    dataset: str
    rates: np.ndarray  # trials x T x channels, Hz
    rates_per_bin: np.ndarray
    factors: np.ndarray | None
    generator_states: np.ndarray | None
    generator_ics: np.ndarray | None
    controller_outputs: np.ndarray | None
    post_g0_mean: np.ndarray | None
    post_g0_logvar: np.ndarray | None
    costs: np.ndarray | None
    nll_bound_vaes: np.ndarray | None
    nll_bound_iwaes: np.ndarray | None
    time_ms: np.ndarray
    spike_bin_ms: float
    train_inds: np.ndarray  # 0-based
    valid_inds: np.ndarray  # 0-based
    condition_id: np.ndarray | None


def _run_dir(run: Run | Path | str) -> Path:
    return run.path if isinstance(run, Run) else Path(run)


def input_datasets(run_dir: Path) -> list[str]:
    """Dataset names of a run, from its lfadsInput/lfads_<ds>.h5 files."""
    folder = run_dir / LFADS_INPUT
    names = sorted(p.name[len(LFADS_FILE_PREFIX):-3] for p in folder.glob(f"{LFADS_FILE_PREFIX}*.h5"))
    if not names:
        raise ManagerError(folder, "no lfads_<dataset>.h5 inputs found", "point at a run folder prepared by lfads-manager")
    return names


def posterior_files(run_dir: Path, dataset: str, kind: str | None = None) -> tuple[Path, Path] | None:
    """(train, valid) model_runs files of `dataset`, for `kind` or the first kind that exists."""
    out = run_dir / LFADS_OUTPUT
    for candidate in [kind] if kind else POSTERIOR_KINDS:
        train = out / f"model_runs_{dataset}.h5_train_{candidate}"
        valid = out / f"model_runs_{dataset}.h5_valid_{candidate}"
        if train.exists() and valid.exists():
            return train, valid
    return None


def _read_all(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        return {key: np.asarray(node[()]) for key, node in handle.items() if isinstance(node, h5py.Dataset)}


def _interleave(train: np.ndarray, valid: np.ndarray, train_inds: np.ndarray, valid_inds: np.ndarray) -> np.ndarray:
    out = np.empty((train_inds.size + valid_inds.size, *train.shape[1:]), dtype=np.result_type(train, valid))
    out[train_inds] = train
    out[valid_inds] = valid
    return out


def _spike_bin_ms(info: dict[str, object], h5_inputs: dict[str, np.ndarray], n_bins: int, run: Run | Path | str) -> float:
    if isinstance(run, Run):
        return float(run.params.spikeBinMs)
    input_bin = float(np.asarray(info["seq_binSizeMs"]).ravel()[0])
    if "conversion_factor" in h5_inputs:
        return input_bin / float(h5_inputs["conversion_factor"].ravel()[0])
    n_input = np.asarray(info["seq_timeVector"]).size
    return input_bin * max(1, n_input // n_bins)


def refuse_if_stale(run_dir: Path) -> None:
    """Results of a model trained on other data than its input holds now must not be read as its own."""
    changed = run_stale_since(run_dir)
    if changed is not None:
        raise ManagerError(run_dir, f"its data changed after it was trained ({describe_time(changed)}), so its results"
                           " no longer match its input (other trials, order or datasets)",
                           f"retrain it: {retrain_hint(run_dir)} (or restore the old data and prepare again)")


def load_posterior_means(run: Run | Path | str, kind: str | None = None) -> dict[str, PosteriorMeans]:
    """Posterior means of every dataset of a run (a Run, or a run folder), keyed by dataset name."""
    run_dir = _run_dir(run)
    if kind is None and isinstance(run, Run):
        kind = run.params.posterior_mean_kind
    refuse_if_stale(run_dir)
    results = {}
    for dataset in input_datasets(run_dir):
        input_file = run_dir / LFADS_INPUT / f"{LFADS_FILE_PREFIX}{dataset}.h5"
        files = posterior_files(run_dir, dataset, kind)
        if files is None:
            raise ManagerError(run_dir / LFADS_OUTPUT, f"no posterior means for {dataset}",
                               "run lfads_posterior_mean_sample.sh (the queue does after training)")
        train, valid = (_read_all(path) for path in files)
        inputs = _read_all(input_file)
        info = read_mat(run_dir / LFADS_INPUT / f"{INPUT_INFO_PREFIX}{dataset}.mat")
        train_inds = inputs["train_inds"].astype(np.int64).ravel() - 1
        valid_inds = inputs["valid_inds"].astype(np.int64).ravel() - 1
        if train["output_dist_params"].shape[0] != train_inds.size or valid["output_dist_params"].shape[0] != valid_inds.size:
            raise ManagerError(files[0], "posterior means cover a different number of trials than the input",
                               "if the data was re-prepared after training, delete lfadsOutput/ and lfads.done and train"
                               " again; otherwise sample the posterior over every trial (no ps_nexamples_to_process limit)")
        merged = {key: _interleave(train[key], valid[key], train_inds, valid_inds) for key in train if key in valid}
        per_bin = merged["output_dist_params"]
        n_bins = per_bin.shape[1]
        bin_ms = _spike_bin_ms(info, inputs, n_bins, run)
        input_bin = float(np.asarray(info["seq_binSizeMs"]).ravel()[0])
        rebin = max(1, round(bin_ms / input_bin))
        time_ms = np.asarray(info["seq_timeVector"], dtype=np.float64).ravel()[::rebin][:n_bins]
        condition = info.get("conditionId")
        results[dataset] = PosteriorMeans(
            dataset=dataset,
            rates=per_bin * 1000.0 / bin_ms,
            rates_per_bin=per_bin,
            **{_RENAMED.get(key, key): merged.get(key) for key in ("gen_states", "gen_ics", *_KEPT)},
            time_ms=time_ms,
            spike_bin_ms=bin_ms,
            train_inds=train_inds,
            valid_inds=valid_inds,
            condition_id=None if condition is None else np.asarray(condition, dtype=object if isinstance(condition, list) else None).ravel(),
        )
    return results


@dataclass
class FitLog:
    """fitlog.csv columns, one entry per epoch (valid columns are NaN when there was no valid set)."""

    epoch: np.ndarray
    step: np.ndarray
    total_train: np.ndarray
    total_valid: np.ndarray
    recon_train: np.ndarray
    recon_valid: np.ndarray
    kl_train: np.ndarray
    kl_valid: np.ndarray
    l2: np.ndarray
    kl_weight: np.ndarray
    l2_weight: np.ndarray

    @property
    def lve_index(self) -> int | None:
        """Row of the lowest total_valid once the KL and L2 ramps are complete (FitLog.m)."""
        ramped = (self.kl_weight == 1) & (self.l2_weight == 1) & np.isfinite(self.total_valid)
        if not ramped.any():
            return None
        candidates = np.flatnonzero(ramped)
        return int(candidates[np.argmin(self.total_valid[candidates])])


def _parse_fitlog_line(fields: list[str]) -> dict[str, list[float]]:
    """`label,value[,value]` groups: a label is any field that is not a number."""
    parsed: dict[str, list[float]] = {}
    label = None
    for field in fields:
        try:
            value = float(field)
        except ValueError:
            label = field
            parsed[label] = []
            continue
        if label is not None:
            parsed[label].append(value)
    return parsed


def fit_log(run: Run | Path | str) -> FitLog:
    """Read lfadsOutput/fitlog.csv (no header; label,value pairs; spaces around fields are ignored)."""
    path = _run_dir(run) / LFADS_OUTPUT / "fitlog.csv"
    if not path.exists():
        raise ManagerError(path, "no fitlog.csv yet", "train the run first (lfads_train.sh)")
    rows = [_parse_fitlog_line([f.strip() for f in line.split(",")]) for line in path.read_text(errors="replace").splitlines() if line.strip()]
    # An epoch line a crash cut short ends before its last field; it is no epoch record.
    rows = [row for row in rows if not row.get("epoch") or row.get("l2weight")]
    if not rows:
        raise ManagerError(path, "fitlog.csv is empty", "wait for the first epoch to finish")
    # A file without LFADS's "epoch,N, step,N, ..." rows would plot as empty axes and look like success.
    if not any(row.get("epoch") for row in rows):
        raise ManagerError(path, "no 'epoch,N, step,N, ...' rows in fitlog.csv (not written by LFADS?)",
                           "let training write it again (delete the file and requeue the run)")

    def column(label: str, position: int) -> np.ndarray:
        return np.array([row[label][position] if len(row.get(label, [])) > position else np.nan for row in rows])

    return FitLog(
        epoch=column("epoch", 0), step=column("step", 0),
        total_train=column("total", 0), total_valid=column("total", 1),
        recon_train=column("recon", 0), recon_valid=column("recon", 1),
        kl_train=column("kl", 0), kl_valid=column("kl", 1),
        l2=column("l2", 0), kl_weight=column("klweight", 0), l2_weight=column("l2weight", 0),
    )
