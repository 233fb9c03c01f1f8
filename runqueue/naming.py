"""How a run is called on the console and in `status`: `collection` and `name` (DESIGN.md §5).

In the seed layout `<collection>/param_<hash>/<spec>` the name is `param_<hash>/<spec>` and the
collection the folder above `param_*`. Other trees: the name is the path below the root the run
was found under (or the folder's own name when the root is the run), the collection the root's name.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol


def run_identity(run_dir: Path, root: Path | None = None) -> tuple[str, str]:
    """(collection, name) of `run_dir`."""
    parts = run_dir.parts
    for index in range(len(parts) - 1, 0, -1):
        if parts[index].startswith("param_"):
            return parts[index - 1], "/".join(parts[index:])
    if root is not None and run_dir != root and run_dir.is_relative_to(root):
        return root.name, run_dir.relative_to(root).as_posix()
    return run_dir.parent.name, run_dir.name


class _Named(Protocol):
    path: Path
    collection: str
    name: str
    short_name: str


def disambiguate_names(runs: Iterable[_Named]) -> None:
    """Console names must tell runs apart: two collections swept over the same grid both have a
    `param_Qr2PeG/all`. Runs whose name is shared are called `<collection>/<name>` (or by their
    path, if even that is shared); the others keep the short name."""
    by_name: dict[str, list[_Named]] = {}
    for run in runs:
        by_name.setdefault(run.short_name, []).append(run)
    for short, named in by_name.items():
        if len(named) == 1:
            named[0].name = short
            continue
        longer = {run.path: f"{run.collection}/{short}" for run in named}
        shared = len(set(longer.values())) < len(named)
        for run in named:
            run.name = str(run.path) if shared else longer[run.path]
