"""Loading what LFADS wrote back: posterior means in the original trial order, and fitlog.csv."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from manager.errors import ManagerError
from manager.export import LFADS_FILE_PREFIX, input_info_file_name, lfads_file_name, rebin_sum
from manager.export_history import (
    describe_time,
    export_interrupted,
    retrain_hint,
    run_input_stamp,
    stale_since,
)
from manager.matfile import read_mat
from manager.run import Run
from runqueue.layout import FAILED_MARKER, LFADS_INPUT, LFADS_OUTPUT, POSTERIOR_SCRIPT

POSTERIOR_KINDS = ("posterior_sample_and_average", "posterior_sample", "posterior_push_mean")
FITLOG_FILE = "fitlog.csv"  # in lfadsOutput/
# h5 key -> PosteriorMeans field (the original renames output_dist_params, gen_states, gen_ics)
_RENAMED = {"gen_states": "generator_states", "gen_ics": "generator_ics"}
_KEPT = ("factors", "controller_outputs", "costs", "nll_bound_vaes", "nll_bound_iwaes", "post_g0_mean", "post_g0_logvar")


@dataclass
class PosteriorMeans:
    """One dataset's posterior means, trials in the original order (trials first, as in the h5 files).

    rates are in Hz (output_dist_params in counts per bin x 1000 / spikeBinMs); `rates_per_bin` keeps
    the model's units. For Gaussian observations (c_output_dist='gaussian') the model writes means and
    variances: `rates` come from the means, and `output_variances` holds the variances (per bin).
    Arrays missing from the files (e.g. controller_outputs without a controller) are None. Trials the
    posterior step did not process (--ps_nexamples_to_process) are NaN, as in the original loader.
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
    raw_counts: np.ndarray | None = None  # trials x input time bins x channels, as given (MATLAB's rawCounts)
    output_variances: np.ndarray | None = None  # Gaussian observations only


def _run_dir(run: Run | Path | str) -> Path:
    return run.path if isinstance(run, Run) else Path(run)


def input_datasets(run_dir: Path) -> list[str]:
    """Dataset names of a run, from its lfadsInput/lfads_<ds>.h5 files."""
    folder = run_dir / LFADS_INPUT
    names = sorted(p.name[len(LFADS_FILE_PREFIX):-3] for p in folder.glob(f"{LFADS_FILE_PREFIX}*.h5"))
    if not names:
        raise ManagerError(folder, "no lfads_<dataset>.h5 inputs found", "point at a run folder prepared by lfads-manager")
    return names


def posterior_kind(run_dir: Path) -> str | None:
    """The --kind= the run's lfads_posterior_mean_sample.sh asks for (posterior_mean_kind is not part of
    the param hash, so a folder may hold files of an earlier kind too), or None if it does not say."""
    try:
        script = (run_dir / POSTERIOR_SCRIPT).read_text(errors="replace")
    except OSError:
        return None
    found = re.search(r"--kind=(\w+)", script)
    return found.group(1) if found and found.group(1) in POSTERIOR_KINDS else None


def posterior_files(run_dir: Path, dataset: str, kind: str | None = None) -> tuple[Path, Path] | None:
    """(train, valid) model_runs files of `dataset`, for `kind` or the first kind that exists; files
    named by the older `posterior_sample` stand in for `posterior_sample_and_average` (as the original)."""
    out = run_dir / LFADS_OUTPUT
    candidates = POSTERIOR_KINDS if kind is None else [kind, *(["posterior_sample"] if kind == POSTERIOR_KINDS[0] else [])]
    for candidate in candidates:
        train = out / f"model_runs_{dataset}.h5_train_{candidate}"
        valid = out / f"model_runs_{dataset}.h5_valid_{candidate}"
        if train.exists() and valid.exists():
            return train, valid
    return None


POSTERIOR_FIX = "run lfads_posterior_mean_sample.sh again (it rewrites the posterior files)"
INPUT_FIX = "prepare the collection again with --regenerate (it rewrites the exported inputs)"


def read_h5_arrays(path: Path, fix: str, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The datasets of an HDF5 file (only `keys`, those present, when given); a truncated or
    unreadable file is a ManagerError naming it."""
    try:
        with h5py.File(path, "r") as handle:
            return {key: np.asarray(node[()]) for key, node in handle.items()
                    if isinstance(node, h5py.Dataset) and (keys is None or key in keys)}
    except OSError as error:  # h5py's errors for truncated, corrupt or unreadable files are OSErrors
        raise ManagerError(path, f"cannot read this HDF5 file ({error})", fix) from None


def _interleave(train: np.ndarray, valid: np.ndarray, train_inds: np.ndarray, valid_inds: np.ndarray) -> np.ndarray:
    """Back into the original trial order; trials past what the posterior step processed stay NaN."""
    out = np.full((train_inds.size + valid_inds.size, *train.shape[1:]), np.nan)
    out[train_inds[: train.shape[0]]] = train
    out[valid_inds[: valid.shape[0]]] = valid
    return out


def _spike_bin_ms(info: dict[str, object], inputs: dict[str, np.ndarray], train_inds: np.ndarray, n_bins: int,
                  input_bin: float, run: Run | Path | str, info_path: Path) -> float:
    """The output bin in ms: the run's params, else inputInfo's spikeBinMs, else the h5's conversion
    factor, else the one rebin factor with which the export's own rebinning turns inputInfo's counts
    into the exported train_data."""
    if isinstance(run, Run):
        return float(run.params.spikeBinMs)
    if "spikeBinMs" in info:
        return float(np.asarray(info["spikeBinMs"]).ravel()[0])
    if "conversion_factor" in inputs:
        return input_bin / float(inputs["conversion_factor"].ravel()[0])
    counts = np.asarray(info.get("counts", np.zeros((0, 0, 0))))  # C x T_in x trials
    exported = inputs.get("train_data")
    matches = []
    if counts.ndim == 3 and exported is not None and n_bins > 0:
        per_trial = np.transpose(counts[:, :, train_inds], (2, 0, 1))  # trials x C x T_in, time last as export sums
        for rebin in range(counts.shape[1] // (n_bins + 1) + 1, counts.shape[1] // n_bins + 1):
            if np.array_equal(np.transpose(rebin_sum(per_trial, rebin), (0, 2, 1)), exported):
                matches.append(rebin)
    if len(matches) != 1:
        raise ManagerError(info_path, "cannot tell the output bin width (no spikeBinMs here, and the counts do not"
                           " pin the rebinning down)", "load it through its RunCollection (load_posterior_means(run))")
    return input_bin * matches[0]


def _condition_labels(info: dict[str, object], n_trials: int, info_path: Path) -> np.ndarray | None:
    condition = info.get("conditionId")
    if condition is None:
        return None
    labels = np.asarray(condition, dtype=object if isinstance(condition, list | str) else None).ravel()
    if labels.size != n_trials:  # text labels written as one char matrix by lfads-manager before 2026-11-26
        raise ManagerError(info_path, f"conditionId holds {labels.size} labels for {n_trials} trials",
                           "prepare the collection again with --regenerate (text labels are now a cell array)")
    return labels


def refuse_if_stale(run_dir: Path) -> None:
    """Results of a model trained on other data than its input holds now must not be read as its own."""
    stamp = run_input_stamp(run_dir)
    if export_interrupted(stamp):
        raise ManagerError(run_dir, "the export of its input data was interrupted (lfads-manager prepare did not finish), so"
                           " its input files may hold other data than it learned from",
                           "run lfads-manager prepare again; it then says whether the run must be retrained")
    changed = None if stamp is None else stale_since(run_dir, stamp)
    if changed is not None:
        raise ManagerError(run_dir, f"its data changed after it was trained ({describe_time(changed)}), so its results"
                           " no longer match its input (other trials, order or datasets)",
                           f"retrain it: {retrain_hint(run_dir)} (or restore the old data and prepare again)")


def load_posterior_means(run: Run | Path | str, kind: str | None = None) -> dict[str, PosteriorMeans]:
    """Posterior means of every dataset of a run (a Run, or a run folder), keyed by dataset name, in the
    run spec's dataset order for a Run."""
    run_dir = _run_dir(run)
    if kind is None:
        kind = run.params.posterior_mean_kind if isinstance(run, Run) else posterior_kind(run_dir)
    refuse_if_stale(run_dir)
    datasets = input_datasets(run_dir)
    if isinstance(run, Run) and sorted(run.dataset_names) == datasets:
        datasets = list(run.dataset_names)
    return {dataset: _load_dataset(run, run_dir, dataset, kind) for dataset in datasets}


def _load_dataset(run: Run | Path | str, run_dir: Path, dataset: str, kind: str | None) -> PosteriorMeans:
    input_file = run_dir / LFADS_INPUT / lfads_file_name(dataset)
    files = posterior_files(run_dir, dataset, kind)
    if files is None:
        failed = run_dir / FAILED_MARKER
        if failed.exists():
            fix = f"the run failed (see {failed} and its lfads.out); requeue it once fixed: runqueue requeue {run_dir}"
        else:
            fix = "run lfads_posterior_mean_sample.sh (the queue does after training)"
        raise ManagerError(run_dir / LFADS_OUTPUT, f"no posterior means for {dataset}",
                           fix + (f"; it writes the {kind} files" if kind else ""))
    train, valid = (read_h5_arrays(path, POSTERIOR_FIX) for path in files)
    inputs = read_h5_arrays(input_file, INPUT_FIX)
    info_path = run_dir / LFADS_INPUT / input_info_file_name(dataset)
    info = read_mat(info_path, INPUT_FIX)
    train_inds = inputs["train_inds"].astype(np.int64).ravel() - 1
    valid_inds = inputs["valid_inds"].astype(np.int64).ravel() - 1
    n_channels = inputs["train_data"].shape[2]
    per_bin_train, per_bin_valid = train["output_dist_params"], valid["output_dist_params"]
    if (per_bin_train.shape[0] > train_inds.size or per_bin_valid.shape[0] > valid_inds.size
            or per_bin_train.shape[1:] != per_bin_valid.shape[1:] or per_bin_train.shape[2] not in (n_channels, 2 * n_channels)
            or per_bin_train.shape[1] != inputs["train_data"].shape[1]):
        raise ManagerError(files[0], "posterior means do not fit the input (other trials, time bins or channels)",
                           "if the data was re-prepared after training, delete lfadsOutput/ and lfads.done and train again")
    merged = {key: _interleave(train[key], valid[key], train_inds, valid_inds) for key in train if key in valid}
    per_bin = merged["output_dist_params"]
    variances = None
    if per_bin.shape[2] == 2 * n_channels:  # Gaussian observations: [means | variances]
        per_bin, variances = per_bin[..., :n_channels], per_bin[..., n_channels:]
    n_bins = per_bin.shape[1]
    input_bin = float(np.asarray(info["seq_binSizeMs"]).ravel()[0])
    bin_ms = _spike_bin_ms(info, inputs, train_inds, n_bins, input_bin, run, info_path)
    rebin = max(1, round(bin_ms / input_bin))
    time_ms = np.asarray(info["seq_timeVector"], dtype=np.float64).ravel()[::rebin][:n_bins]
    counts = info.get("counts")
    return PosteriorMeans(
        dataset=dataset,
        rates=per_bin * 1000.0 / bin_ms,
        rates_per_bin=per_bin,
        **{_RENAMED.get(key, key): merged.get(key) for key in ("gen_states", "gen_ics", *_KEPT)},
        time_ms=time_ms,
        spike_bin_ms=bin_ms,
        train_inds=train_inds,
        valid_inds=valid_inds,
        condition_id=_condition_labels(info, train_inds.size + valid_inds.size, info_path),
        raw_counts=None if counts is None else np.transpose(np.asarray(counts), (2, 1, 0)),
        output_variances=variances,
    )


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

    @property
    def epochs_trained(self) -> int:
        """Epochs that moved training on: a restart from an older checkpoint logs the epochs since
        that checkpoint again (their steps repeat), and those rows count once."""
        steps = np.where(np.isfinite(self.step), self.step, -np.inf)
        furthest_before = np.maximum.accumulate(np.concatenate([[-np.inf], steps[:-1]]))
        return int(np.count_nonzero(steps > furthest_before))

    @property
    def lve_epoch(self) -> int | None:
        """The epoch of that row. Not the same number as the row after a restart: training resumes at
        its last checkpoint, so fitlog.csv holds some epochs twice (the original LFADS counted from 0 again)."""
        index = self.lve_index
        return None if index is None else int(self.epoch[index])


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
    path = _run_dir(run) / LFADS_OUTPUT / FITLOG_FILE
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
