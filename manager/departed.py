"""Run folders that left the experiment: a param set or run spec dropped from the sweep.

Their folders stay (they may hold results), but one that is not done (nor failed) is still a run to a
queue, and the collection's run_lfads.py would train it. prepare names them; `prune` retires them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from manager.errors import ManagerError
from manager.runlocks import holding_runs
from runqueue.layout import DONE_MARKER, FAILED_MARKER, RETIRED_TRAIN_SCRIPT, TRAIN_SCRIPT

# More than this many departed runs are summed up in one note, not listed.
_LISTED = 5


def retire(folder: Path, why: str) -> bool:
    """Make a run folder no run (to a queue, a run is a folder with lfads_train.sh), unless it is done.
    Adding its param set and run spec back to the experiment prepares it again."""
    script = folder / TRAIN_SCRIPT
    if not script.is_file() or (folder / DONE_MARKER).exists():
        return False
    try:
        os.replace(script, folder / RETIRED_TRAIN_SCRIPT)
    except OSError as error:
        raise ManagerError(script, f"cannot retire this run, which {why} ({error.strerror})",
                           "make the folder writable, or delete it, then prepare again") from None
    return True


def pending_departed_runs(collection_path: Path, current: Iterable[Path]) -> list[Path]:
    """Run folders `param_*/<spec>` of the collection that are not in the experiment any more and
    that a queue would still start: they have lfads_train.sh and neither marker."""
    keep = {Path(path) for path in current}
    found = []
    for script in sorted(collection_path.glob(f"param_*/*/{TRAIN_SCRIPT}")):
        folder = script.parent
        if folder in keep or not script.is_file():
            continue
        if (folder / DONE_MARKER).exists() or (folder / FAILED_MARKER).exists():
            continue
        found.append(folder)
    return found


def prune_departed(folders: list[Path]) -> tuple[list[Path], list[Path]]:
    """Retire the departed runs no one is running now; (retired, running). Under each run's lock, so
    no queue starts one while its script is renamed."""
    retired: list[Path] = []
    with holding_runs(folders) as running:
        for folder in folders:
            if folder not in running and retire(folder, "left the experiment"):
                retired.append(folder)
    return retired, list(running)


def departed_notes(collection_path: Path, pending: list[Path], retired: list[Path], running: list[Path],
                   pruning: bool) -> list[str]:
    """What prepare tells the user about departed runs (nothing when there are none)."""
    def names(folders: list[Path]) -> str:
        shown = ", ".join(str(folder.relative_to(collection_path)) for folder in folders[:_LISTED])
        return shown + (f" and {len(folders) - _LISTED} more" if len(folders) > _LISTED else "")

    notes = []
    if retired:
        notes.append(f"note: retired {len(retired)} unfinished run(s) that left the experiment ({names(retired)}): their"
                     f" {TRAIN_SCRIPT} is now {RETIRED_TRAIN_SCRIPT}; add their param set and run spec back to prepare"
                     " them again")
    if running:
        notes.append(f"note: {len(running)} run(s) that left the experiment are running now and were left alone"
                     f" ({names(running)}); cancel them with `runqueue cancel`, then prepare --prune again")
    if pending and not pruning:
        notes.append(f"note: {len(pending)} run folder(s) in {collection_path} left the experiment but are not"
                     f" done ({names(pending)}); a queue over the collection (its run_lfads.py) would still train"
                     " them: `lfads-manager prepare --prune EXPERIMENT.toml` retires them, or delete the folders")
    return notes
