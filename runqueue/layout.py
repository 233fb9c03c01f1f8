"""Every name of the run-folder contract (DESIGN.md §2-§3), in one place.

Dependency-free on purpose: `manager/` imports it too, so the preparation side and the
queue can never disagree on a file name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TRAIN_SCRIPT = "lfads_train.sh"
# What lfads-manager prepare renames lfads_train.sh to when the run left the experiment.
RETIRED_TRAIN_SCRIPT = TRAIN_SCRIPT + ".retired"
POSTERIOR_SCRIPT = "lfads_posterior_mean_sample.sh"
WRITE_PARAMS_SCRIPT = "lfads_write_model_params.sh"
# Steps in the order the queue runs them; only the first is required to exist.
STEP_SCRIPTS: tuple[str, ...] = (TRAIN_SCRIPT, POSTERIOR_SCRIPT, WRITE_PARAMS_SCRIPT)

OUT_LOG = "lfads.out"
DONE_MARKER = "lfads.done"
FAILED_MARKER = "lfads.failed"
RUNTIME_DIR = ".runqueue"
# Made and removed at once by `runqueue requeue` in the run folder: watching queues hear of a
# requeue that changed only .runqueue/state.json (a back-off, a block) through it.
REQUEUE_NUDGE = ".runqueue-requeued"
# How often a running run's supervisor looks at its folder (still there? a cancel.json for it?):
# `runqueue cancel` by an account that may not signal it (the service's) waits that long more.
SUPERVISOR_LOOKS_EVERY_S = 2.0
LFADS_INPUT = "lfadsInput"
LFADS_OUTPUT = "lfadsOutput"
# Optional per-run resource declaration the manager may write: JSON object with
# "memory_mb" (int) and/or "time_limit" (e.g. "2h", "90m", seconds as a number).
RESOURCES_FILE = "runqueue.json"
# runqueue.json written by lfads-manager says so (the queue ignores the key): prepare may then remove it.
RESOURCES_WRITER_KEY = "written_by"
RESOURCES_WRITER = "lfads-manager prepare"

SUMMARY_FILE = "summary.txt"
TENSORBOARD_SCRIPT = "launch_tensorboard.sh"
COLLECTION_QUEUE_SCRIPT = "run_lfads.py"

DEFAULT_MEMORY_MB = 2000


@dataclass(frozen=True)
class RunPaths:
    """The paths of one run folder; nobody else builds these names."""

    root: Path

    @property
    def train_script(self) -> Path:
        return self.root / TRAIN_SCRIPT

    @property
    def step_scripts(self) -> tuple[Path, ...]:
        return tuple(self.root / name for name in STEP_SCRIPTS)

    @property
    def out_log(self) -> Path:
        return self.root / OUT_LOG

    @property
    def done_marker(self) -> Path:
        return self.root / DONE_MARKER

    @property
    def failed_marker(self) -> Path:
        return self.root / FAILED_MARKER

    @property
    def runtime_dir(self) -> Path:
        return self.root / RUNTIME_DIR

    def runtime_dir_obstacle(self) -> str | None:
        """Why no supervisor can keep its lock and state in `.runqueue` (a file or a broken link in
        the folder's place, a folder in a file's place), or None."""
        runtime = self.runtime_dir
        if not os.path.lexists(runtime):
            return None
        if runtime.is_symlink() and runtime.is_dir():
            return f"{runtime} is a link, not the queue's folder (the queue never follows one there); remove it"
        if not runtime.is_dir():
            kind = "a broken link" if runtime.is_symlink() else "a file"
            return f"{runtime} is {kind}, not the queue's folder; remove or rename it"
        for path in (self.lock, self.state):
            if path.is_symlink():
                return f"{path} is a link, not the queue's file (the queue never follows one there); remove it"
            if path.is_dir():
                return f"{path} is a folder, not the queue's file; remove or rename it"
            if os.path.lexists(path) and not path.is_file():
                return f"{path} is not a regular file (a fifo, socket or device), not the queue's file; remove it"
        return None

    @property
    def lock(self) -> Path:
        return self.runtime_dir / "lock"

    @property
    def state(self) -> Path:
        return self.runtime_dir / "state.json"

    @property
    def deletion_record(self) -> Path:
        """Written by `lfads-manager delete-output` before it deletes anything, removed when it ends:
        left behind, the deletion was killed midway and no queue may start the run."""
        return self.runtime_dir / "delete-output.started"

    @property
    def cancel_request(self) -> Path:
        """`runqueue cancel`'s grace for the supervisor it signals (written just before the signal)."""
        return self.runtime_dir / "cancel.json"

    @property
    def resources(self) -> Path:
        return self.root / RESOURCES_FILE

    @property
    def lfads_input(self) -> Path:
        return self.root / LFADS_INPUT

    @property
    def lfads_output(self) -> Path:
        return self.root / LFADS_OUTPUT


def folder_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a folder: the same path may name a new folder after a delete and re-create."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino
