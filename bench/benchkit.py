"""What the queue benchmarks share: an isolated environment and folders of trivial runs."""

from __future__ import annotations

import os
import time
from pathlib import Path


def queue_env(work: Path) -> dict[str, str]:
    """The caller's environment without RUNQUEUE_* settings, with claims kept inside `work`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RUNQUEUE_")}
    env["RUNQUEUE_CLAIMS_DIR"] = str(work / "claims")
    return env


def make_runs(root: Path, count: int, script: str, prefix: str = "") -> list[Path]:
    """`count` run folders (ten per param_ folder) whose lfads_train.sh is `script`."""
    runs = []
    for index in range(count):
        run = root / "coll" / f"param_{prefix}{index // 10:04d}" / f"run{index % 10}"
        run.mkdir(parents=True)
        (run / "lfads_train.sh").write_text(script)
        # Prepared a while ago, as a queue meets them after `lfads-manager prepare`: a script written
        # in the last second waits for SCRIPT_SETTLE_S first, which these benches do not measure.
        prepared = time.time() - 10
        os.utime(run / "lfads_train.sh", (prepared, prepared))
        runs.append(run)
    return runs
