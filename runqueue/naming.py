"""How a run is called on the console and in `status`: `collection` and `name` (DESIGN.md §5).

In the seed layout `<collection>/param_<hash>/<spec>` the name is `param_<hash>/<spec>` and the
collection the folder above `param_*`. Other trees: the name is the path below the root the run
was found under (or the folder's own name when the root is the run), the collection the root's name.
"""

from __future__ import annotations

from pathlib import Path


def run_identity(run_dir: Path, root: Path | None = None) -> tuple[str, str]:
    """(collection, name) of `run_dir`."""
    parts = run_dir.parts
    for index in range(len(parts) - 1, 0, -1):
        if parts[index].startswith("param_"):
            return parts[index - 1], "/".join(parts[index:])
    if root is not None and run_dir != root and run_dir.is_relative_to(root):
        return root.name, run_dir.relative_to(root).as_posix()
    return run_dir.parent.name, run_dir.name
