"""Alignment matrices for stitching: PCR of condition averages onto global PCs (reference §5.6).

For every dataset of a run spec, the read-in `A` (nChannels x c_factors_dim) and bias `b` are chosen
so that (x - b) @ A reproduces the global principal components of all datasets' condition-averaged
rates. LFADS starts its per-dataset read-in from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from manager.errors import ManagerError
from manager.export import Alignment, rebin_sum
from manager.sequence import SequenceData

RIDGE_LAMBDAS = np.logspace(-5, 2, 15)
RIDGE_FOLDS = 10


@dataclass(frozen=True)
class AlignmentResult:
    alignments: list[Alignment]
    conditions: list[object]
    pc_avg_all: np.ndarray  # k x T x nConditions: the global PCs (black traces in the plot)
    reconstruction_by_dataset: list[np.ndarray]  # each k x T x nConditions: (x - b) @ A per dataset


def condition_averages(data: SequenceData, rebin: int, conditions: Sequence[object]) -> np.ndarray:
    """nChannels x T x nConditions trial averages at the output binning; NaN where a condition is absent."""
    counts = rebin_sum(data.counts.astype(np.float64), rebin)
    out = np.full((counts.shape[1], counts.shape[2], len(conditions)), np.nan)
    if data.condition_id is None:
        return out
    labels = data.condition_id
    for column, condition in enumerate(conditions):
        rows = labels == condition
        if np.any(rows):
            out[:, :, column] = counts[rows].mean(axis=0)
    return out


def _condition_list(datasets: Sequence[SequenceData]) -> list[object]:
    values: set[object] = set()
    for data in datasets:
        if data.condition_id is None:
            continue
        for value in data.condition_id.tolist():
            if (isinstance(value, float) and np.isnan(value)) or value == "":
                continue  # trials without a condition do not enter the averages
            values.add(value)
    return sorted(values, key=lambda v: (isinstance(v, str), v))


def _pca(centered: np.ndarray, k: int) -> np.ndarray:
    """Loadings (nRows x k) of PCA over the columns; pairwise covariance when there are NaNs."""
    finite = np.isfinite(centered)
    if finite.all():
        cov = centered @ centered.T / max(centered.shape[1] - 1, 1)
    else:
        filled = np.where(finite, centered, 0.0)
        both = finite.astype(np.float64) @ finite.T.astype(np.float64)
        cov = (filled @ filled.T) / np.maximum(both - 1, 1)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    order = np.argsort(eigenvalues)[::-1][:k]
    loadings = eigenvectors[:, order]
    # MATLAB's pca makes the largest-magnitude entry of each component positive.
    signs = np.sign(loadings[np.argmax(np.abs(loadings), axis=0), np.arange(loadings.shape[1])])
    return loadings * np.where(signs == 0, 1, signs)


def _ridge_fit(x: np.ndarray, y: np.ndarray, normalize_each: bool) -> np.ndarray:
    """y ≈ x @ W + b by ridge regression, as LFADS.Utils.ridge_cv: x divided by its overall std (per
    column with ridgeNormalizeEach), the intercept not penalised, λ from RIDGE_LAMBDAS by the lowest
    mean test error over its interleaved folds (fold f: the rows with index % folds == f, 1-based,
    *trains* and the rest tests, as there). Returns W in x's own units."""
    divisors = x.std(axis=0, ddof=1) if normalize_each else np.full(x.shape[1], x.std(ddof=1))
    divisors = np.where(divisors > 0, divisors, 1.0)  # a constant channel: MATLAB would divide by 0
    xs = x / divisors
    n = xs.shape[0]
    folds = min(RIDGE_FOLDS, n)
    fold_of_row = np.arange(1, n + 1) % folds
    mse = np.zeros(len(RIDGE_LAMBDAS))
    for i, lam in enumerate(RIDGE_LAMBDAS):
        for fold in range(folds):
            train = fold_of_row == fold
            weights, intercept = _ridge_solve(xs[train], y[train], lam)
            mse[i] += np.mean((xs[~train] @ weights + intercept - y[~train]) ** 2) / folds
    weights, _ = _ridge_solve(xs, y, RIDGE_LAMBDAS[int(np.argmin(mse))])
    return weights / divisors[:, None]


def _ridge_solve(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) minimising |[1 x] [b; W] − y|² + λ|W|² (ridge_cv's fit_single)."""
    design = np.hstack([np.ones((x.shape[0], 1)), x])
    penalty = lam * np.eye(design.shape[1])
    penalty[0, 0] = 0.0
    solution = np.linalg.lstsq(design.T @ design + penalty, design.T @ y, rcond=None)[0]
    return solution[1:], solution[0]


def _extra_args(extra: Sequence[object], path: Path | None) -> dict[str, object]:
    if len(extra) % 2:
        raise ManagerError(path, "alignmentExtraArgs must be name/value pairs", "give an even number of entries")
    return {str(extra[i]): extra[i + 1] for i in range(0, len(extra), 2)}


def compute_alignment(
    datasets: Sequence[SequenceData],
    rebins: Sequence[int],
    n_factors: int,
    approach: str = "regressGlobalPCs",
    extra_args: Sequence[object] = (),
    sources: Sequence[Path] = (),
) -> AlignmentResult:
    """Alignment matrices and biases for each dataset (one dataset: its own PCA read-in). `sources`,
    the datasets' files in the same order, name the file at fault in errors."""
    def source(index: int) -> Path | None:
        return sources[index] if index < len(sources) else None

    where = source(0)
    switch = "useAlignmentMatrix" if len(datasets) > 1 else "useSingleDatasetAlignmentMatrix"  # Run.uses_alignment
    if approach not in ("regressGlobalPCs", "ridgeRegressGlobalPCs"):
        raise ManagerError(where, f"unknown alignmentApproach {approach!r}", "use 'regressGlobalPCs' or 'ridgeRegressGlobalPCs'")
    options = _extra_args(extra_args, where)
    for index, data in enumerate(datasets):
        if data.condition_id is None:
            raise ManagerError(source(index), "has no conditionId, and alignment needs one per trial in every dataset",
                               f"store conditionId (one per trial) in the data file, or set {switch} = false")
    conditions = _condition_list(datasets)
    if not conditions:
        raise ManagerError(where, "alignment needs conditionId in every dataset", "store conditionId (one per trial) in the data files")
    averages = [condition_averages(d, r, conditions) for d, r in zip(datasets, rebins, strict=True)]
    n_time = {avg.shape[1] for avg in averages}
    if len(n_time) != 1:
        raise ManagerError(where, f"datasets have different numbers of time bins after rebinning ({sorted(n_time)})",
                           "trim every dataset to the same trial length")
    t, n_cond = averages[0].shape[1], len(conditions)
    # Columns as MATLAB's all_data_tensor(:, :): time fastest, then condition. PCA and least squares do
    # not care, but ridge_cv's folds are interleaved by row, so the ridge λ depends on this order.
    flat = [avg.reshape(avg.shape[0], t * n_cond, order="F") for avg in averages]
    all_data = np.vstack(flat)
    means = np.nanmean(all_data, axis=1, keepdims=True)
    centered = all_data - means
    k = min(n_factors, all_data.shape[0])
    loadings = _pca(centered, k)
    scores = loadings.T @ centered  # k x TC; NaN where any dataset misses the condition

    alignments: list[Alignment] = []
    reconstructions: list[np.ndarray] = []
    if len(datasets) == 1:
        matrices = [loadings]
    else:
        matrices = []
        for x in flat:
            keep = np.isfinite(x).all(axis=0) & np.isfinite(scores).all(axis=0)
            if keep.sum() < 2:
                raise _unshared_conditions(datasets, sources)
            xk = x[:, keep].T - x[:, keep].T.mean(axis=0)
            zk = scores[:, keep].T - scores[:, keep].T.mean(axis=0)
            if approach == "ridgeRegressGlobalPCs":
                matrices.append(_ridge_fit(xk, zk, bool(options.get("ridgeNormalizeEach", False))))
            else:
                matrices.append(np.linalg.lstsq(xk, zk, rcond=None)[0])
    for index, (x, matrix) in enumerate(zip(flat, matrices, strict=True)):
        bias = np.nanmean(x, axis=1)
        if np.isnan(matrix).any() or np.isnan(bias).any():
            raise ManagerError(source(index), "alignment produced NaN (a channel with no data in any condition?)",
                               f"drop channels without spikes or set {switch} = false")
        padded = np.zeros((matrix.shape[0], n_factors))
        padded[:, : matrix.shape[1]] = matrix
        alignments.append(Alignment(padded, bias))
        reconstructions.append((matrix.T @ (x - bias[:, None])).reshape(k, t, n_cond, order="F"))
    return AlignmentResult(alignments, conditions, scores.reshape(k, t, n_cond, order="F"), reconstructions)


def _conditions_of(data: SequenceData) -> set[object]:
    return set(_condition_list([data]))


def _unshared_conditions(datasets: Sequence[SequenceData], sources: Sequence[Path]) -> ManagerError:
    """Too few conditions are in every dataset: the error names the dataset(s) with the smallest share
    of conditions found in any other dataset, and shows a few conditions of each (numbers never match text)."""
    sets = [_conditions_of(data) for data in datasets]
    names = [sources[i].name if i < len(sources) else f"dataset {i + 1}" for i in range(len(datasets))]

    def shared(index: int) -> float:
        others = set().union(*(conditions for i, conditions in enumerate(sets) if i != index))
        return len(sets[index] & others) / max(len(sets[index]), 1)

    shares = [shared(i) for i in range(len(sets))]
    blamed = [i for i, share in enumerate(shares) if share == min(shares)]
    common = len(set.intersection(*sets)) if sets else 0
    shown = "; ".join(f"{names[i]}: {_few(sets[i])}" for i in range(len(sets)))
    who = ", ".join(names[i] for i in blamed)
    problem = (f"only {common} condition(s) are in every dataset of the run spec, too few to align them;"
               f" {'these datasets share' if len(blamed) > 1 else who + ' shares'} the fewest conditions with the others"
               f"{f' ({who})' if len(blamed) > 1 else ''} (conditionId: {shown})")
    return ManagerError(sources[blamed[0]] if blamed[0] < len(sources) else None, problem,
                        "give each condition the same conditionId in every dataset (numbers never match text labels),"
                        " or leave the dataset out of the run spec")


def _few(conditions: set[object], shown: int = 4) -> str:
    values = sorted(conditions, key=lambda v: (isinstance(v, str), v))
    text = [f"{v:g}" if isinstance(v, float) else repr(v) for v in values[:shown]]
    return ", ".join(text) + (", …" if len(values) > shown else "") if text else "none"


def plot_alignment_reconstruction(result: AlignmentResult, names: Sequence[str],
                                  n_pcs: int = 3, conditions: Sequence[int] = (0, 19, 39)) -> bytes:
    """PNG bytes: global PCs (black) against each dataset's reconstruction, a few conditions."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_pcs = min(n_pcs, result.pc_avg_all.shape[0])
    shown = [c for c in conditions if c < result.pc_avg_all.shape[2]] or [0]
    figure, axes = plt.subplots(n_pcs, len(shown), figsize=(3 * len(shown), 2.2 * n_pcs), squeeze=False)
    for row in range(n_pcs):
        for col, condition in enumerate(shown):
            ax = axes[row][col]
            for name, recon in zip(names, result.reconstruction_by_dataset, strict=True):
                ax.plot(recon[row, :, condition], lw=1, label=name)
            ax.plot(result.pc_avg_all[row, :, condition], color="black", lw=2, label="global PC")
            ax.set_title(f"PC {row + 1}, condition {result.conditions[condition]}", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=6)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()
