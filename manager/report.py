"""`lfads-manager report RUN_DIR`: PNG plots of a run's fit into RUN_DIR/report/ and the R² vs truth."""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import h5py
import numpy as np

from manager.atomicio import write_if_changed
from manager.errors import ManagerError
from manager.export import lfads_file_name
from manager.results import (
    FITLOG_FILE,
    INPUT_FIX,
    PosteriorMeans,
    fit_log,
    input_datasets,
    load_posterior_means,
    posterior_files,
    posterior_kind,
    read_h5_arrays,
    refuse_if_stale,
)
from runqueue.layout import LFADS_INPUT, LFADS_OUTPUT, TRAIN_SCRIPT

REPORT_DIR = "report"


def _pyplot():  # matplotlib is slow to import; only the report needs it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure: object) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, metadata={"Software": None})  # type: ignore[attr-defined]
    plt.close(figure)  # type: ignore[arg-type]
    return buffer.getvalue()


R2_FILE = "r2.txt"
RATES_PLOT_PREFIX = "rates_vs_truth_"
CURVES_FILE = "training_curves.png"


def report_files(run_dir: Path) -> list[Path]:
    """The files `write_report` makes in RUN_DIR/report (anything else there is the user's)."""
    report = run_dir / REPORT_DIR
    return [path for path in (report / CURVES_FILE, report / R2_FILE, *sorted(report.glob(f"{RATES_PLOT_PREFIX}*.png")))
            if os.path.lexists(path)]


def r_squared(predicted: np.ndarray, truth: np.ndarray) -> float:
    """R² per channel over all trials and time bins, averaged over channels (sklearn's
    'uniform_average'; channels whose truth is constant are left out)."""
    p, t = predicted.reshape(-1, predicted.shape[-1]), truth.reshape(-1, truth.shape[-1])
    residual = ((t - p) ** 2).sum(axis=0)
    total = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
    # Constant by value, not by `total > 0`: the mean of a constant non-zero float is inexact, which
    # leaves a ~1e-28 total and a -1e25 R² for that channel.
    keep = np.ptp(t, axis=0) > 0
    return float(np.mean(1.0 - residual[keep] / total[keep])) if keep.any() else float("nan")


def training_curves_png(run_dir: Path) -> bytes:
    log = fit_log(run_dir)
    plt = _pyplot()
    figure, (costs, weights) = plt.subplots(1, 2, figsize=(10, 3.5))
    for values, label in ((log.total_train, "total train"), (log.total_valid, "total valid"),
                          (log.recon_train, "recon train"), (log.recon_valid, "recon valid")):
        if np.isfinite(values).any():
            costs.plot(log.epoch, values, label=label)
    if log.lve_index is not None:
        costs.axvline(log.epoch[log.lve_index], color="grey", ls=":", label="lowest valid error")
    costs.set_xlabel("epoch")
    costs.set_ylabel("cost")
    costs.legend(fontsize=7)
    weights.plot(log.epoch, log.kl_weight, label="KL weight")
    weights.plot(log.epoch, log.l2_weight, label="L2 weight")
    weights.set_xlabel("epoch")
    weights.legend(fontsize=7)
    figure.suptitle(f"{run_dir.parent.name}/{run_dir.name}", fontsize=9)
    figure.tight_layout()
    return _png(figure)


def _truth_in_trial_order(run_dir: Path, means: PosteriorMeans) -> np.ndarray | None:
    inputs = read_h5_arrays(run_dir / LFADS_INPUT / lfads_file_name(means.dataset), INPUT_FIX,
                            keys=("train_truth", "valid_truth"))
    if "train_truth" not in inputs or "valid_truth" not in inputs:
        return None
    truth = np.empty(means.rates_per_bin.shape)
    truth[means.train_inds] = inputs["train_truth"]
    truth[means.valid_inds] = inputs["valid_truth"]
    return truth  # spikes per bin, like output_dist_params


def input_has_truth(run_dir: Path, dataset: str) -> bool:
    """Whether the exported input holds the true rates (synthetic data), without loading them."""
    path = run_dir / LFADS_INPUT / lfads_file_name(dataset)
    try:
        with h5py.File(path, "r") as handle:
            return "train_truth" in handle and "valid_truth" in handle
    except OSError as error:
        raise ManagerError(path, f"cannot read this HDF5 file ({error})", INPUT_FIX) from None


@dataclasses.dataclass(frozen=True)
class TruthFit:
    """A dataset's inferred rates against the true ones, over the valid trials."""

    means: PosteriorMeans  # valid_inds cut to the valid trials the posterior step processed
    truth: np.ndarray  # spikes per bin, trials in the original order
    r2: float


def fit_to_truth(run_dir: Path, means: PosteriorMeans) -> TruthFit | str:
    """The valid-trial rate R² against the truth, or why there is none."""
    truth = _truth_in_trial_order(run_dir, means)
    if truth is None:
        return "no truth in the input"
    # Valid trials the posterior step processed (--ps_nexamples_to_process leaves the rest NaN).
    means = dataclasses.replace(means, valid_inds=means.valid_inds[np.isfinite(means.rates_per_bin[means.valid_inds]).all(axis=(1, 2))])
    if means.valid_inds.size == 0:
        return "no valid trial has posterior means"
    return TruthFit(means, truth, r_squared(means.rates_per_bin[means.valid_inds], truth[means.valid_inds]))


_UNLABELLED = "(none)"


def _condition_key(label: object) -> str:
    """A condition label as a comparable string; NaN (MATLAB's missing number) and "" are no label."""
    if isinstance(label, float):
        return _UNLABELLED if np.isnan(label) else f"{label:g}"
    text = str(label).strip()
    return text or _UNLABELLED


def rates_png(means: PosteriorMeans, truth: np.ndarray, n_channels: int = 3, n_conditions: int = 3) -> bytes:
    plt = _pyplot()
    valid = means.valid_inds
    labels = means.condition_id[valid].tolist() if means.condition_id is not None else [0.0] * valid.size
    keys = [_condition_key(label) for label in labels]
    # Labelled conditions first; trials without one (NaN or empty) form a group of their own.
    conditions = sorted(dict.fromkeys(keys), key=lambda key: key == _UNLABELLED)[:n_conditions]
    channels = range(min(n_channels, truth.shape[2]))
    figure, axes = plt.subplots(len(channels), len(conditions), figsize=(3.2 * len(conditions), 2.3 * len(channels)), squeeze=False)
    to_hz = 1000.0 / means.spike_bin_ms
    for row, channel in enumerate(channels):
        for col, condition in enumerate(conditions):
            ax = axes[row][col]
            trials = valid[[key == condition for key in keys]]
            for trial in trials:
                ax.plot(means.time_ms, means.rates[trial, :, channel], color="tab:blue", lw=0.6, alpha=0.5)
            ax.plot(means.time_ms, truth[trials[0], :, channel] * to_hz, color="black", lw=2)
            ax.set_title(f"channel {channel + 1}, condition {condition}", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[-1][0].set_xlabel("time (ms)")
    axes[-1][0].set_ylabel("rate (Hz)")
    figure.suptitle(f"{means.dataset}: inferred (blue, valid trials) vs true rates (black)", fontsize=9)
    figure.tight_layout()
    return _png(figure)


def _remove_plots_of_other_datasets(report: Path, datasets: list[str]) -> None:
    """Rate plots this command wrote for datasets the run no longer has would pass for current ones."""
    wanted = {f"{RATES_PLOT_PREFIX}{name}.png" for name in datasets}
    for plot in report.glob(f"{RATES_PLOT_PREFIX}*.png"):
        if plot.name not in wanted and plot.is_file() and not plot.is_symlink():
            plot.unlink()


def write_report(run_dir: Path | str) -> list[str]:
    """Write report/*.png for whatever the run has produced; return the lines to print."""
    run_dir = Path(run_dir).absolute()
    output = run_dir / LFADS_OUTPUT
    if not (run_dir / TRAIN_SCRIPT).is_file():
        what = ("not a run folder (it has no lfads_train.sh)" if run_dir.is_dir()
                else "a file, not a run folder" if run_dir.exists() else "no such folder")
        raise ManagerError(run_dir, what, "give a run folder, e.g. runs/<collection>/param_<hash>/<spec>")
    if not output.is_dir():
        raise ManagerError(output, "no LFADS output yet", "train the run first (python run_lfads.py in its collection)")
    refuse_if_stale(run_dir)
    has_fitlog = (output / FITLOG_FILE).exists()
    datasets = input_datasets(run_dir)
    kind = posterior_kind(run_dir)  # what its posterior step writes: a folder may hold an older kind too
    has_posterior = all(posterior_files(run_dir, name, kind) is not None for name in datasets)
    if not has_fitlog and not has_posterior:
        raise ManagerError(output, "nothing to report (no fitlog.csv, no posterior means)", "let training run for an epoch")
    report = run_dir / REPORT_DIR
    lines = []
    curves = None
    if has_fitlog:
        try:
            curves = training_curves_png(run_dir)
        except ManagerError as error:  # a broken fitlog.csv must not hide the rate plots
            if not has_posterior:
                raise
            lines.append(f"skipped the training curves: {error}")
    report.mkdir(exist_ok=True)  # only now: a refused report leaves no empty folder behind
    if curves is not None:
        write_if_changed(report / CURVES_FILE, curves)
        lines.append(f"wrote {report / CURVES_FILE}")
    _remove_plots_of_other_datasets(report, datasets)
    if not has_posterior:
        lines.append("no posterior means yet (run lfads_posterior_mean_sample.sh); skipped the rate plots")
        return lines
    scores: list[str] = []
    for name, means in load_posterior_means(run_dir, kind).items():
        fit = fit_to_truth(run_dir, means)
        if isinstance(fit, str):
            lines.append(f"{name}: {fit}; skipped the rate plot")
            continue
        png = report / f"{RATES_PLOT_PREFIX}{name}.png"
        write_if_changed(png, rates_png(fit.means, fit.truth))
        lines += [f"wrote {png}", f"{name}: valid-trial rate R² vs truth = {fit.r2:.3f}"]
        scores.append(f"{name}: valid-trial rate R² vs truth = {fit.r2:.6f}\n")
    if scores:  # kept with the plots: the console that printed it is gone by the time anyone compares runs
        write_if_changed(report / R2_FILE, "".join(scores))
        lines.append(f"wrote {report / R2_FILE}")
    return lines
