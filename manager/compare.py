"""`lfads-manager compare DIR`: every run of a sweep side by side — its state, how far it trained, its
lowest validation cost once the KL and L2 ramps were complete (the checkpoint the posterior step
uses), the valid-trial rate R² against the truth where the data has one, and the parameters that
differ between the runs. Read from the files alone, so it works on trees of the MATLAB tool too.

A run whose files cannot be read gets a note instead of figures; the other runs are still compared.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manager.errors import ManagerError
from manager.report import fit_to_truth, input_has_truth
from manager.results import (
    FITLOG_FILE,
    fit_log,
    input_datasets,
    load_posterior_means,
    posterior_files,
    posterior_kind,
)
from manager.summary import SummaryParams, read_summary_params
from runqueue.discovery import find_runs
from runqueue.layout import LFADS_OUTPUT, SUMMARY_FILE, RunPaths
from runqueue.naming import run_identity
from runqueue.runstate import RunState, marker_state, read_failure

# Flags that say where a run's files are, not how it is fitted.
_LOCATION_FLAGS = frozenset({"kind", "data_dir", "data_filename_stem", "lfads_save_dir", "checkpoint_pb_load_name"})
_FLAG = re.compile(r"""--([A-Za-z_]\w*)=("[^"]*"|'[^']*'|[^\s;&|)]+)""")


@dataclass
class RunResult:
    """One run of the comparison. Figures are None where the run has not produced them (yet)."""

    path: Path
    name: str  # param_<hash>/<run spec>, or the path under DIR for other layouts
    state: str  # done, failed, running, pending (the queue's markers)
    failure: str | None = None  # lfads.failed's reason
    params_name: str = ""  # the RunParams name given in summary.txt
    params: dict[str, str] = field(default_factory=dict)  # every property, as summary.txt (or the flags) write it
    epochs: int | None = None  # epochs trained (fitlog.csv rows; one re-logged after a restart counts once)
    steps: int | None = None  # the last training step logged
    best_valid: float | None = None  # lowest total validation cost after the ramps
    best_valid_recon: float | None = None  # the reconstruction part of that cost
    best_epoch: int | None = None
    r2: dict[str, float] = field(default_factory=dict)  # dataset -> valid-trial rate R² vs truth
    notes: list[str] = field(default_factory=list)  # why a figure is missing

    @property
    def mean_r2(self) -> float | None:
        return sum(self.r2.values()) / len(self.r2) if self.r2 else None


@dataclass
class Comparison:
    root: Path
    runs: list[RunResult]  # in `order`; runs without that figure last, by name
    varying: list[str]  # parameters whose values differ between the runs
    order: str = "best_valid"  # what the runs are sorted by: a SORT_KEYS entry or a parameter

    def counts(self) -> dict[str, int]:
        counted: dict[str, int] = {}
        for run in self.runs:
            counted[run.state] = counted.get(run.state, 0) + 1
        return counted


# What a comparison can be sorted by besides a parameter: the figure, and which end comes first.
SORT_KEYS: dict[str, str] = {
    "best_valid": "lowest first", "r2": "highest first", "epochs": "most first", "run": "by name", "state": "by name",
}
_DESCENDING = frozenset({"r2", "epochs"})


def compare_runs(root: Path | str, *, with_r2: bool = True, sort: str = "best_valid") -> Comparison:
    """Every run folder under `root` (a collection, a param_<hash> folder, or a folder of
    collections), sorted by `sort` (see SORT_KEYS; or a parameter's name, e.g. c_gen_dim). The
    default puts the best run first. `with_r2=False` skips reading the posterior means."""
    root = Path(root).absolute()
    if not root.is_dir():
        raise ManagerError(root, "no such folder" if not root.exists() else "a file, not a folder",
                           "give a collection folder, e.g. runs/<collection>")
    found = find_runs([root])
    if not found:
        raise ManagerError(root, "no run folders under it (none holds lfads_train.sh)",
                           "give a prepared collection folder, e.g. runs/<collection> (lfads-manager prepare makes one)")
    summaries: dict[Path, dict[str, SummaryParams]] = {}
    runs = [_result(run.path, root, summaries, with_r2) for run in found]
    if sort not in SORT_KEYS and not any(sort in run.params for run in runs):
        raise ManagerError(root, f"cannot sort by {sort!r}: no run has that figure or parameter",
                           f"use one of {', '.join(SORT_KEYS)} or a parameter name, e.g. "
                           f"{', '.join(_varying(runs)[:3]) or 'c_gen_dim'}")
    return Comparison(root, _sorted(runs, sort), _varying(runs), sort)


def _sorted(runs: list[RunResult], key: str) -> list[RunResult]:
    """By `key`, runs without a value for it last; ties and the runs left over by name."""
    values = {run.path: _sort_value(run, key) for run in runs}
    valued = [run for run in runs if values[run.path] is not None]
    rest = sorted((run for run in runs if values[run.path] is None), key=lambda run: run.name)
    numbers = {run.path: _number(values[run.path]) for run in valued}
    if all(number is not None for number in numbers.values()):  # 16 before 128, not after it
        sign = -1.0 if key in _DESCENDING else 1.0
        return sorted(valued, key=lambda run: (sign * numbers[run.path], run.name)) + rest  # type: ignore[operator]
    return sorted(valued, key=lambda run: (str(values[run.path]), run.name)) + rest


def _sort_value(run: RunResult, key: str) -> float | str | None:
    if key not in SORT_KEYS:
        return run.params.get(key)
    figures: dict[str, float | str | None] = {"best_valid": run.best_valid, "r2": run.mean_r2, "epochs": run.epochs,
                                              "run": run.name, "state": run.state}
    return figures[key]


def _number(value: float | str | None) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _result(run_dir: Path, root: Path, summaries: dict[Path, dict[str, SummaryParams]], with_r2: bool) -> RunResult:
    paths = RunPaths(run_dir)
    # Named from DIR down (runs of two collections may share a param_<hash>/<spec>), but never less
    # than param_<hash>/<spec>.
    name = run_identity(run_dir)[1] if root in (run_dir, run_dir.parent) else run_dir.relative_to(root).as_posix()
    state = marker_state(paths)
    failure = read_failure(paths) if state is RunState.FAILED else None
    result = RunResult(run_dir, name, state.value, failure=None if failure is None else str(failure.get("reason", "unknown")))
    _fill_params(result, summaries)
    if (run_dir / LFADS_OUTPUT / FITLOG_FILE).exists():
        _fill_fit(result)
    if with_r2:
        _fill_r2(result)
    return result


def _fill_params(result: RunResult, summaries: dict[Path, dict[str, SummaryParams]]) -> None:
    """From the collection's summary.txt (every property, spikeBinMs too); for a param set that left
    the summary (pruned from the experiment) or a tree without one, from the training flags."""
    param_folder = result.path.parent
    collection = param_folder.parent
    if collection not in summaries:
        summaries[collection] = read_summary_params(collection / SUMMARY_FILE)
    setting = summaries[collection].get(param_folder.name)
    if setting is not None:
        result.params_name, result.params = setting.name, dict(setting.values)
        return
    try:
        script = RunPaths(result.path).train_script.read_text(errors="replace")
    except OSError as error:
        result.notes.append(f"cannot read lfads_train.sh ({error.strerror})")
        return
    # The training command only: a MATLAB script chains `(train && posterior && write-params) | tee`,
    # whose later commands give their own --batch_size.
    training = script.split("&&", 1)[0]
    result.params = {f"c_{flag}": value.strip("\"'") for flag, value in _FLAG.findall(training) if flag not in _LOCATION_FLAGS}


def _fill_fit(result: RunResult) -> None:
    try:
        log = fit_log(result.path)
    except (ManagerError, OSError) as error:
        result.notes.append(_problem(error))
        return
    result.epochs = log.epochs_trained
    steps = _finite(log.step[-1])
    result.steps = None if steps is None else int(steps)
    best = log.lve_index
    if best is not None:
        result.best_valid = _finite(log.total_valid[best])
        result.best_valid_recon = _finite(log.recon_valid[best])
        epoch = _finite(log.epoch[best])
        result.best_epoch = None if epoch is None else int(epoch)


def _finite(value: object) -> float | None:
    """A number for the table and for JSON (which has no NaN); None for NaN or infinity."""
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def _fill_r2(result: RunResult) -> None:
    """Only for data with a truth (synthetic) whose posterior means are all there: real data has no
    truth, and loading the means of every run of a sweep for nothing would be most of the time."""
    try:
        datasets = input_datasets(result.path)
        kind = posterior_kind(result.path)
        if not all(input_has_truth(result.path, name) for name in datasets):
            return
        if any(posterior_files(result.path, name, kind) is None for name in datasets):
            return
        for name, means in load_posterior_means(result.path, kind).items():
            fit = fit_to_truth(result.path, means)
            score = None if isinstance(fit, str) else _finite(fit.r2)
            if score is None:
                result.notes.append(f"{name}: {fit if isinstance(fit, str) else 'no channel of the truth varies'}")
            else:
                result.r2[name] = score
    except (ManagerError, OSError) as error:
        result.notes.append(_problem(error))


def _problem(error: ManagerError | OSError) -> str:
    """A note for the table: what could not be read (the run's name is beside it)."""
    if isinstance(error, ManagerError):
        return error.problem
    return f"cannot read {error.filename}: {error.strerror or error}"


def _varying(runs: list[RunResult]) -> list[str]:
    """Parameters whose value is not the same in every run, in the order the runs list them."""
    names = list(dict.fromkeys(name for run in runs for name in run.params))
    return [name for name in names if len({run.params.get(name) for run in runs}) > 1]


# ================================================================ output
_FIGURES = ("state", "epochs", "best_valid", "valid_recon", "at_epoch", "r2")


def _row(run: RunResult, varying: list[str]) -> dict[str, Any]:
    state = run.state if run.failure is None else f"{run.state} ({run.failure})"
    return {"run": run.name, "state": state, "epochs": run.epochs, "best_valid": run.best_valid,
            "valid_recon": run.best_valid_recon, "at_epoch": run.best_epoch, "r2": run.mean_r2,
            **{name: run.params.get(name) for name in varying}}


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def render_table(comparison: Comparison) -> str:
    counts = ", ".join(f"{count} {state}" for state, count in sorted(comparison.counts().items()))
    order = SORT_KEYS.get(comparison.order, "by value")
    lines = [f"{comparison.root}: {len(comparison.runs)} run(s) ({counts}); sorted by {comparison.order} ({order});"
             " best_valid = lowest validation cost after the KL/L2 ramps; r2 = valid-trial rate R² vs truth"
             " (mean over datasets)"]
    header = ["run", *_FIGURES, *comparison.varying]
    table = [header] + [[_cell(value) for value in _row(run, comparison.varying).values()] for run in comparison.runs]
    widths = [max(len(row[column]) for row in table) for column in range(len(header))]
    for row in table:
        lines.append("  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                               for column, (cell, width) in enumerate(zip(row, widths, strict=True))).rstrip())
    notes = [f"{run.name}: {note}" for run in comparison.runs for note in run.notes]
    if notes:
        lines += ["", "notes:", *(f"  {note}" for note in notes)]
    if not comparison.varying and len(comparison.runs) > 1:
        lines += ["", "(every run has the same parameters: they differ only in their run spec)"]
    return "\n".join(lines) + "\n"


def render_csv(comparison: Comparison) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["run", *_FIGURES, *comparison.varying, "path"])
    for run in comparison.runs:
        row = _row(run, comparison.varying)
        writer.writerow([("" if value is None else repr(value) if isinstance(value, float) else value) for value in row.values()]
                        + [str(run.path)])
    return buffer.getvalue()


def render_json(comparison: Comparison) -> str:
    def encode(run: RunResult) -> dict[str, Any]:
        return {"name": run.name, "path": str(run.path), "state": run.state, "failure": run.failure,
                "params_name": run.params_name, "epochs": run.epochs, "steps": run.steps,
                "best_valid": run.best_valid, "best_valid_recon": run.best_valid_recon, "best_epoch": run.best_epoch,
                "r2": run.r2, "varying": {name: run.params.get(name) for name in comparison.varying},
                "params": run.params, "notes": run.notes}

    document = {"root": str(comparison.root), "sorted_by": comparison.order, "varying": comparison.varying,
                "runs": [encode(run) for run in comparison.runs]}
    return json.dumps(document, indent=1) + "\n"
