"""summary.txt: which runs exist and every parameter of each (RunCollection.generateSummaryText), and
reading the parameter settings back from one."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from manager.matlab_values import format_summary_value

if TYPE_CHECKING:
    from manager.collection import RunCollection
    from manager.params import RunParams


# RunParams.listNonTransientProperties always leaves these out (the name is in the header line).
_NEVER_IN_DIFFERENCES = ("name", "version")


def short_differences(params: RunParams) -> str:
    """`prop=value prop=value` for the non-default properties, or `default` (generateShortDifferencesString)."""
    differences = {name: value for name, value in params.non_default().items() if name not in _NEVER_IN_DIFFERENCES}
    return " ".join(f"{name}={format_summary_value(value)}" for name, value in differences.items()) or "default"


def summary_text(collection: RunCollection) -> str:
    datasets = collection.dataset_collection
    lines = [
        f'RunCollection "{collection.name}" ({len(collection.runs)} runs total)',
        f"  Path: {collection.path}",
        f'  Dataset Collection "{datasets.name}" ({len(datasets)} datasets) in {datasets.path}',
        "",
        "  ------------------------",
        f"  {len(collection.run_specs)} Run Specifications:",
        "",
    ]
    for index, spec in enumerate(collection.run_specs, start=1):
        lines.append(f'    [runSpec {index}] RunSpec "{spec.name}" ({spec.n_datasets} datasets)')
        for ds_index, name in zip(spec.dataset_indices, spec.dataset_names, strict=True):
            lines.append(f'      [ds {ds_index + 1}] Dataset "{name}"')
        lines.append("")
    lines += ["  ------------------------", f"  {len(collection.params)} Parameter Settings:", ""]
    for index, params in enumerate(collection.params, start=1):
        lines.append(f'    [{index} {params.param_hash_name} {params.data_hash_name}] RunParams "{params.name}"')
        lines.append(f"      {short_differences(params)}")
        lines.append("")
        for prop, value in params.items():
            if prop.name in ("name", "version") or ((prop.hidden or prop.added) and params.is_default(prop)):
                continue
            lines.append(f"      {prop.name}: {format_summary_value(value)}")
        lines.append("")
    return "\n".join(lines)


_PARAMS_HEADER = re.compile(r'^\s*\[\d+ (param_[A-Za-z0-9_-]{6}) data_[A-Za-z0-9_-]{6}\] \S+ "(.*)"\s*$')
_PROPERTY_LINE = re.compile(r"^\s+([A-Za-z_]\w*): (.*)$")


@dataclass(frozen=True)
class SummaryParams:
    """One parameter setting as summary.txt lists it: its name and every property's value, as text."""

    name: str
    values: dict[str, str]


def read_summary_params(path: Path) -> dict[str, SummaryParams]:
    """param_<hash> folder name -> its setting, from a summary.txt written by this package or by the
    MATLAB lfads-run-manager (same layout); {} when there is no such file or it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    settings: dict[str, SummaryParams] = {}
    current: SummaryParams | None = None
    for line in text.splitlines():
        header = _PARAMS_HEADER.match(line)
        if header:
            current = settings[header.group(1)] = SummaryParams(header.group(2), {})
        elif current is not None and (prop := _PROPERTY_LINE.match(line)):
            current.values[prop.group(1)] = prop.group(2).strip()
    return settings
