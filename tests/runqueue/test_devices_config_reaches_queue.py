"""Every key of the service config reaches the queue it runs
(the config tests only check the parsed ServiceConfig and its unused to_argv(); the serve tests use
four keys)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import pytest

import runqueue.serve as serve_module
from runqueue.scheduler import QueueOptions, RunCounts


class CapturingScheduler:
    seen: ClassVar[list[QueueOptions]] = []

    def __init__(self, options: QueueOptions, hooks: object = None) -> None:
        self.options = options
        self.hung_up = False
        self.signals: list[int] = []
        CapturingScheduler.seen.append(options)

    def run(self) -> None:
        pass

    def reload_due(self) -> bool:
        return False

    def counts(self) -> RunCounts:
        return RunCounts()


def test_every_service_config_key_reaches_the_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "gpus.json").write_text("[]")
    config = tmp_path / "runqueue.toml"
    config.write_text(
        'roots = ["runs"]\nsimulate_gpus = "gpus.json"\ncpu_slots = 3\nmax_per_gpu = 2\nmemory_per_run = 1234\n'
        'retries = 4\nretry_backoff = "1m"\nkill_grace = 7\ntime_limit = "2h"\nforeign = "share"\n'
        'poll_interval = "3s"\nquiet = true\nclaims_dir = "claims"\nexecutor = "local"\n')
    monkeypatch.setattr(serve_module, "Scheduler", CapturingScheduler)
    monkeypatch.setenv("RUNQUEUE_CLAIMS_DIR", "unset-by-the-test")  # restored after the test, whatever serve sets
    monkeypatch.delenv("RUNQUEUE_CLAIMS_DIR")
    CapturingScheduler.seen.clear()
    assert serve_module.serve(config, []) == 0
    (options,) = CapturingScheduler.seen
    assert options.roots == [tmp_path / "runs"] and options.watch and options.detach_on_stop
    assert options.simulate_gpus == str(tmp_path / "gpus.json")
    assert (options.cpu_slots, options.max_per_gpu, options.memory_per_run, options.retries) == (3, 2, 1234, 4)
    assert (options.retry_backoff_s, options.kill_grace_s, options.time_limit_s) == (60.0, 7.0, 7200.0)
    assert (options.foreign, options.poll_interval_s, options.quiet, options.executor) == ("share", 3.0, True, "local")
    assert os.environ["RUNQUEUE_CLAIMS_DIR"] == str(tmp_path / "claims")  # every queue of the service shares these claims
    # The SLURM keys, with the executor they apply to (this machine's device keys do not: refused with it).
    config.write_text('roots = ["runs"]\nexecutor = "slurm"\n[slurm]\npartition = "gpu"\ntime = "1-00:00:00"\nmem_mb = 9000\n')
    CapturingScheduler.seen.clear()
    assert serve_module.serve(config, []) == 0
    (options,) = CapturingScheduler.seen
    assert options.executor == "slurm"
    assert (options.slurm.partition, options.slurm.time_s, options.slurm.mem_mb) == ("gpu", 86400.0, 9000)
